import { BucketStore } from '@tally/buckets';
import { loadConfigOrExit, writerEnv } from '@tally/config';
import { checkTable, connectDynamo, createDynamoMeter, DynamoUnreachableError, SpilledItems, TableError } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { createReplicaFence, createShardWorkers, QUEUE, warnOnTooFewReplicas } from '@tally/queues';
import { startWorkerApp } from '@tally/queues/worker-app';
import { createTenantDirectory, visitorExpiry } from '@tally/tenants';
import { createWriterMetrics, flushProcessor, outboxReplicated, type OutboxFence } from './flush.processor';

// Composition root of the DynamoDB writer: one flush job per row, one UpdateItem per DynamoDB item.
const config = loadConfigOrExit(writerEnv);
const { log, rules, registry, layout, redis, worker, crash, serve } = startWorkerApp('dynamo-writer', config);
const meter = createDynamoMeter(registry);
const metrics = createWriterMetrics(registry);
const client = connectDynamo(config, { maxAttempts: 2 });

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

const dataRedis = redis();
const buckets = new BucketStore({ redis: dataRedis, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
// REDIS_WAIT_REPLICAS: a connection of its own for WAIT, which blocks its connection (libs/queues replica-fence.ts).
let replicated: OutboxFence | undefined;
if (config.REDIS_WAIT_REPLICAS > 0) {
  const waitRedis = redis();
  warnOnTooFewReplicas(waitRedis, config.REDIS_WAIT_REPLICAS, (msg) => log.warn(msg));
  replicated = outboxReplicated(
    createReplicaFence(waitRedis, config.REDIS_WAIT_REPLICAS, config.REDIS_WAIT_TIMEOUT_MS, [dataRedis]),
    redisKeys(config.KEY_PREFIX),
  );
}
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
    // Visitor rows of stores with a history retention carry a DynamoDB TTL (the tenant looked up, cached a minute).
    expiryOf: visitorExpiry(createTenantDirectory({ dynamo: client, table: config.DYNAMODB_TABLE, cacheTtlMs: 60_000, log })),
  }),
  layout,
  { ...worker, concurrency: config.WRITER_CONCURRENCY },
);

await serve({
  workers,
  ready: workers,
  started: { table: config.DYNAMODB_TABLE, ...(replicated ? { waitReplicas: config.REDIS_WAIT_REPLICAS } : {}) },
  close: [{ name: 'dynamodb', run: async () => client.destroy() }],
});
