import { BucketStore } from '@tally/buckets';
import { loadConfigOrExit, writerEnv } from '@tally/config';
import { checkTable, createDynamoClient, createDynamoMeter, DynamoUnreachableError, TableError } from '@tally/dynamo';
import { crashPoints, createLogger, createMetrics, installShutdown, logEmitterErrors, queueDepthMetrics, startOpsServer } from '@tally/observability';
import { BULL_PREFIX, closeQueues, createQueues, QUEUE, QUEUE_SETTINGS } from '@tally/queues';
import { loadRulesOrExit } from '@tally/schema';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
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

const redis = new Redis(config.REDIS_URL, { maxRetriesPerRequest: null });
const buckets = new BucketStore({ redis, rules, prefix: config.KEY_PREFIX });
const queues = createQueues(redis.duplicate());
queueDepthMetrics(registry, Object.values(queues));
const crash = crashPoints(config.TALLY_CRASH_POINT);

const worker = new Worker(
  QUEUE.dynamoWrites,
  flushProcessor({
    buckets,
    dynamo: { client, table: config.DYNAMODB_TABLE, meter },
    metrics,
    log,
    maxBackoffMs: config.WRITER_MAX_BACKOFF_MS,
    crash: config.TALLY_CRASH_POINT ? crash : undefined,
  }),
  {
    connection: redis.duplicate(),
    prefix: BULL_PREFIX,
    concurrency: config.WRITER_CONCURRENCY,
    lockDuration: config.JOB_LOCK_MS,
    stalledInterval: config.JOB_LOCK_MS,
    maxStalledCount: QUEUE_SETTINGS[QUEUE.dynamoWrites].maxStalledCount,
  },
);
worker.on('failed', (job, err) => log.error({ jobId: job?.id, err: err.message }, 'flush job failed'));
// While Redis is down every connection and the worker report each reconnect: one line per distinct error and 10 s.
logEmitterErrors(log, 'redis', [redis, ...Object.values(queues)]);
logEmitterErrors(log, 'worker', [worker], { level: 'error' });

const ops = await startOpsServer({
  host: config.HTTP_HOST,
  port: config.HTTP_PORT,
  registry,
  log,
  ready: async () => (await redis.ping()) === 'PONG' && worker.isRunning(),
});
log.info({ port: ops.port, table: config.DYNAMODB_TABLE }, 'dynamo writer started');

installShutdown(log, [
  { name: 'worker', run: () => worker.close(), timeoutMs: 20_000 },
  { name: 'queues', run: () => closeQueues(queues) },
  { name: 'ops server', run: () => ops.close() },
  { name: 'redis', run: () => redis.quit() },
  { name: 'dynamodb', run: async () => client.destroy() },
]);
