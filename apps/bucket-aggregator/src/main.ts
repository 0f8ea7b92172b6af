import { BucketStore } from '@tally/buckets';
import { aggregatorEnv, loadConfigOrExit } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
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
  createQueues,
  closeQueues,
  createRedisConnection,
  createShardWorkers,
  QUEUE,
  QUEUE_SETTINGS,
  type QueueLayout,
} from '@tally/queues';
import { loadRulesOrExit } from '@tally/schema';
import { createTenantDirectory } from '@tally/tenants';
import { Worker } from 'bullmq';
import { createAggregatorMetrics, registerBacklogGauges } from './aggregator-metrics';
import { eventsProcessor, tenantTimeZones, unknownStoreMarks } from './events.processor';
import { readBacklog, sealProcessor } from './seal.processor';

// Composition root of the bucket aggregator: applies event batches to Redis buckets, and runs the sealer
// (seal, fold, schedule flushes) from a BullMQ job scheduler every BUCKET_SECONDS.
const config = loadConfigOrExit(aggregatorEnv);
const log = createLogger({ name: 'bucket-aggregator', level: config.LOG_LEVEL });
const rules = loadRulesOrExit(config.RULES_FILE);
const { registry } = createMetrics({ app: 'bucket-aggregator' });
const metrics = createAggregatorMetrics(registry);

const layout: QueueLayout = { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS };
const workerRedis = createRedisConnection(config, { maxRetriesPerRequest: null });
const scriptRedis = createRedisConnection(config, { maxRetriesPerRequest: null });
const queueRedis = createRedisConnection(config, { maxRetriesPerRequest: null });
const queues = createQueues(queueRedis, layout);
queueDepthMetrics(registry, allQueues(queues));
const buckets = new BucketStore({ redis: scriptRedis, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
// The seqs other replicas' sealers set, so that applies to the stores they sealed need no stale retry (a hint:
// while it is not subscribed, such an apply retries once). ioredis subscribes again after a reconnect.
const epochRedis = createRedisConnection(config, { maxRetriesPerRequest: null });
buckets.followEpochs(epochRedis).catch((err: unknown) => log.warn({ err }, 'not following the sealers’ epochs'));
registerBacklogGauges(registry, () => readBacklog(buckets, Date.now()));
const dynamo = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION });
const TENANT_CACHE_MS = 60_000;
const tenants = createTenantDirectory({ dynamo, table: config.DYNAMODB_TABLE, cacheTtlMs: TENANT_CACHE_MS, log });
const crash = crashPoints(config.TALLY_CRASH_POINT);

// A batch for a store with no tenant is refused (failed set, tally_batches_rejected_total{reason="unknown_store"});
// the store's mark makes @tally/client refuse it at once for as long as this aggregator may cache the answer.
const unknownStores = unknownStoreMarks(scriptRedis, config.KEY_PREFIX, TENANT_CACHE_MS);
const timeZoneOf = tenantTimeZones(tenants, unknownStores);

const eventsWorkers = createShardWorkers(
  QUEUE.events,
  eventsProcessor({ buckets, rules, timeZoneOf, unknownStores, dedupeTtlSeconds: config.DEDUPE_WINDOW_SECONDS, metrics, log, crash }),
  layout,
  {
    connection: workerRedis,
    concurrency: config.AGGREGATOR_CONCURRENCY,
    lockDuration: config.JOB_LOCK_MS,
    stalledInterval: config.JOB_LOCK_MS,
    maxStalledCount: QUEUE_SETTINGS[QUEUE.events].maxStalledCount,
  },
);
const bucketMs = config.BUCKET_SECONDS * 1000;
const sealWorker = config.SEALER_ENABLED
  ? new Worker(QUEUE.seal, sealProcessor({ buckets, queues, bucketMs, metrics, log }), {
      connection: workerRedis.duplicate(),
      prefix: queues[QUEUE.seal].opts.prefix,
      // One job per work-set shard and tick; a replica takes a few shards at once, the others take the rest.
      concurrency: Math.min(config.QUEUE_SHARDS, 4),
      lockDuration: config.JOB_LOCK_MS,
      stalledInterval: config.JOB_LOCK_MS,
      maxStalledCount: QUEUE_SETTINGS[QUEUE.seal].maxStalledCount,
    })
  : undefined;
for (const w of [...eventsWorkers, sealWorker]) {
  w?.on('failed', (job, err) => log.error({ queue: w.name, jobId: job?.id, err: err.message }, 'job failed'));
}
// While Redis is down every connection and worker reports each reconnect: one line per distinct error and 10 s.
logEmitterErrors(log, 'redis', [workerRedis, scriptRedis, queueRedis, epochRedis, ...allQueues(queues)]);
logEmitterErrors(log, 'worker', [...eventsWorkers, sealWorker], { level: 'error' });
if (sealWorker) {
  const schedulers = Array.from({ length: config.QUEUE_SHARDS }, (_, shard) => `sealer-${shard}`);
  for (const [shard, id] of schedulers.entries()) {
    await queues[QUEUE.seal].upsertJobScheduler(
      id,
      { every: bucketMs },
      { name: 'seal', data: { shard }, opts: QUEUE_SETTINGS[QUEUE.seal].jobs },
    );
  }
  // QUEUE_SHARDS went down: the schedulers of shards that no longer exist go.
  for (const s of await queues[QUEUE.seal].getJobSchedulers())
    if (s.key && !schedulers.includes(s.key)) await queues[QUEUE.seal].removeJobScheduler(s.key);
}

const ops = await startOpsServer({
  host: config.HTTP_HOST,
  port: config.HTTP_PORT,
  registry,
  log,
  ready: async () => (await scriptRedis.ping()) === 'PONG' && eventsWorkers.every((w) => w.isRunning()),
});
log.info({ port: ops.port, bucketSeconds: config.BUCKET_SECONDS, sealer: config.SEALER_ENABLED }, 'bucket aggregator started');

installShutdown(log, [
  { name: 'workers', run: () => Promise.all([...eventsWorkers.map((w) => w.close()), sealWorker?.close()]), timeoutMs: 20_000 },
  { name: 'queues', run: () => closeQueues(queues) },
  { name: 'ops server', run: () => ops.close() },
  { name: 'redis', run: () => Promise.all([workerRedis.quit(), scriptRedis.quit(), epochRedis.quit()]) },
  { name: 'dynamodb', run: async () => dynamo.destroy() },
]);
