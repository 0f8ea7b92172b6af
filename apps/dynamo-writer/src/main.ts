import { BucketStore } from '@tally/buckets';
import { loadConfigOrExit, writerEnv } from '@tally/config';
import { checkTable, connectDynamo, createDynamoMeter, DynamoUnreachableError, SpilledItems, TableError } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { createShardWorkers, QUEUE, storeFenceOf } from '@tally/queues';
import { startWorkerApp } from '@tally/queues/worker-app';
import { createTenantDirectory, visitorExpiry } from '@tally/tenants';
import { createWriterMetrics, flushProcessor } from './flush.processor';
import { createRestampMetrics, restampProcessor } from './restamp.processor';

// Composition root of the DynamoDB writer: one flush job per row, one UpdateItem per DynamoDB item.
const config = loadConfigOrExit(writerEnv);
const { log, rules, registry, layout, redis, worker, crash, serve } = startWorkerApp('dynamo-writer', config);
const meter = createDynamoMeter(registry);
const metrics = createWriterMetrics(registry);
const client = connectDynamo(config, { maxAttempts: 2 });

try {
  // A TTL that is off or on another attribute is logged (and tally_dynamodb_ttl_enabled 0), not fatal.
  await checkTable(client, config.DYNAMODB_TABLE, { warn: ({ message, ...w }) => log.warn(w, message), registry });
} catch (err) {
  if (err instanceof TableError) {
    process.stderr.write(`tally: ${err.message}\n`);
    process.exit(1);
  }
  // DynamoDB unreachable: keep running, flush jobs wait until it is back (that is what the queue is for).
  if (err instanceof DynamoUnreachableError) log.warn({ err: err.message }, 'DynamoDB unavailable at start; flushes will wait');
  else throw err;
}

const dataRedis = redis();
const buckets = new BucketStore({ redis: dataRedis, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
// REDIS_WAIT_REPLICAS: a row goes to DynamoDB only once that many replicas hold the outbox the flush read.
const replicated = storeFenceOf({
  replicas: config.REDIS_WAIT_REPLICAS,
  timeoutMs: config.REDIS_WAIT_TIMEOUT_MS,
  connect: redis,
  covered: [dataRedis],
  keys: redisKeys(config.KEY_PREFIX),
  what: 'the outbox',
  warn: (msg) => log.warn(msg),
});
// Stage "write": each dynamo-writes job flushes one row's outbox to DynamoDB (flush.processor.ts).
const workers = createShardWorkers(
  QUEUE.dynamoWrites,
  flushProcessor({
    buckets,
    dynamo: { client, table: config.DYNAMODB_TABLE, meter, spilled: new SpilledItems() },
    metrics,
    log,
    maxBackoffMs: config.WRITER_MAX_BACKOFF_MS,
    replicated,
    crash: config.TALLY_CRASH_POINT ? crash : undefined,
    // Visitor rows (every entity whose key includes the visitor) of stores with a history retention carry a
    // DynamoDB TTL (the tenant looked up, cached a minute).
    expiryOf: visitorExpiry(createTenantDirectory({ dynamo: client, table: config.DYNAMODB_TABLE, cacheTtlMs: 60_000, log }), rules),
  }),
  layout,
  { ...worker, concurrency: config.WRITER_CONCURRENCY },
);

// Store maintenance: the restamp of a store's visitor items after a change of its visitor-history retention
// (restamp.processor.ts), one at a time per process (each is a Scan of the table), on a client of its own whose
// requests may take longer and retry more than a flush's.
const maintenanceClient = connectDynamo(config);
const maintenance = createShardWorkers(
  QUEUE.maintenance,
  restampProcessor({
    db: { dynamo: maintenanceClient, table: config.DYNAMODB_TABLE },
    rules,
    metrics: createRestampMetrics(registry),
    log,
  }),
  layout,
  { ...worker, concurrency: 1 },
);

await serve({
  workers: [...workers, ...maintenance],
  ready: [...workers, ...maintenance],
  started: { table: config.DYNAMODB_TABLE, ...(replicated ? { waitReplicas: config.REDIS_WAIT_REPLICAS } : {}) },
  close: [{ name: 'dynamodb', run: async () => [client, maintenanceClient].forEach((c) => c.destroy()) }],
});
