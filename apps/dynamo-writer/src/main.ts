import { BucketStore } from '@tally/buckets';
import { loadConfigOrExit, writerEnv } from '@tally/config';
import { checkTable, createDynamoClient, createDynamoMeter, DynamoUnreachableError, SpilledItems, TableError } from '@tally/dynamo';
import {
  crashPoints,
  createLogger,
  createMetrics,
  installShutdown,
  logEmitterErrors,
  queueDepthMetrics,
  startOpsServer,
} from '@tally/observability';
import {
  allQueues,
  closeQueues,
  createQueues,
  createRedisConnection,
  createShardWorkers,
  QUEUE,
  QUEUE_SETTINGS,
  type QueueLayout,
} from '@tally/queues';
import { loadRulesOrExit } from '@tally/schema';
import { createTenantDirectory, visitorExpiry } from '@tally/tenants';
import { createWriterMetrics, flushProcessor } from './flush.processor';

// Composition root of the DynamoDB writer: one flush job per row, one UpdateItem per DynamoDB item.
const config = loadConfigOrExit(writerEnv);
const log = createLogger({ name: 'dynamo-writer', level: config.LOG_LEVEL });
const rules = loadRulesOrExit(config.RULES_FILE);
const { registry } = createMetrics({ app: 'dynamo-writer' });
const meter = createDynamoMeter(registry);
const metrics = createWriterMetrics(registry);
const client = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION, maxAttempts: 2 });

try {
  await checkTable(client, config.DYNAMODB_TABLE);
} catch (err) {
  if (err instanceof TableError) {
    process.stderr.write(`tally: ${err.message}\n`);
    process.exit(1);
  }
  // DynamoDB unreachable: keep running, flush jobs wait until it is back (that is what the queue is for).
  if (err instanceof DynamoUnreachableError) log.warn({ err: err.message }, 'DynamoDB unavailable at start; flushes will wait');
  else throw err;
}

const layout: QueueLayout = { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS };
const redis = createRedisConnection(config, { maxRetriesPerRequest: null });
const buckets = new BucketStore({ redis, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
const queues = createQueues(redis.duplicate(), layout);
queueDepthMetrics(registry, allQueues(queues));
const crash = crashPoints(config.TALLY_CRASH_POINT);

const workers = createShardWorkers(
  QUEUE.dynamoWrites,
  flushProcessor({
    buckets,
    dynamo: { client, table: config.DYNAMODB_TABLE, meter, spilled: new SpilledItems() },
    metrics,
    log,
    maxBackoffMs: config.WRITER_MAX_BACKOFF_MS,
    crash: config.TALLY_CRASH_POINT ? crash : undefined,
    // Visitor rows of stores with a history retention carry a DynamoDB TTL (the tenant looked up, cached a minute).
    expiryOf: visitorExpiry(createTenantDirectory({ dynamo: client, table: config.DYNAMODB_TABLE, cacheTtlMs: 60_000, log })),
  }),
  layout,
  {
    connection: redis.duplicate(),
    concurrency: config.WRITER_CONCURRENCY,
    lockDuration: config.JOB_LOCK_MS,
    stalledInterval: config.JOB_LOCK_MS,
    maxStalledCount: QUEUE_SETTINGS[QUEUE.dynamoWrites].maxStalledCount,
  },
);
for (const worker of workers) worker.on('failed', (job, err) => log.error({ jobId: job?.id, err: err.message }, 'flush job failed'));
// While Redis is down every connection and the workers report each reconnect: one line per distinct error and 10 s.
logEmitterErrors(log, 'redis', [redis, ...allQueues(queues)]);
logEmitterErrors(log, 'worker', workers, { level: 'error' });

const ops = await startOpsServer({
  host: config.HTTP_HOST,
  port: config.HTTP_PORT,
  registry,
  log,
  ready: async () => (await redis.ping()) === 'PONG' && workers.every((w) => w.isRunning()),
});
log.info({ port: ops.port, table: config.DYNAMODB_TABLE }, 'dynamo writer started');

installShutdown(log, [
  { name: 'worker', run: () => Promise.all(workers.map((w) => w.close())), timeoutMs: 20_000 },
  { name: 'queues', run: () => closeQueues(queues) },
  { name: 'ops server', run: () => ops.close() },
  { name: 'redis', run: () => redis.quit() },
  { name: 'dynamodb', run: async () => client.destroy() },
]);
