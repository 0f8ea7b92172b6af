import { BucketStore, recordTopHistory } from '@tally/buckets';
import { aggregatorEnv, loadConfigOrExit } from '@tally/config';
import { connectDynamo } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { metricsOn } from '@tally/observability';
import {
  createShardWorkers,
  QUEUE,
  QUEUE_SETTINGS,
  shardWorker,
  storeFenceOf,
  STRANDED_AFTER_MS,
  WorkerWatchdog,
  type RedisConnection,
} from '@tally/queues';
import { startWorkerApp } from '@tally/queues/worker-app';
import { createTenantDirectory } from '@tally/tenants';
import { createAggregatorMetrics, registerBacklogGauges } from './aggregator-metrics';
import { eventsProcessor, STORE_ZONE_TTL_MS, storeMarks, tenantTimeZones } from './events.processor';
import { readBacklog, sealProcessor } from './seal.processor';

// Composition root of the bucket aggregator: applies event batches to Redis buckets, and runs the sealer
// (seal, fold, schedule flushes) from a BullMQ job scheduler every BUCKET_SECONDS.
const config = loadConfigOrExit(aggregatorEnv);
const { log, rules, registry, layout, queues, leftovers, redis, worker, crash, serve } = startWorkerApp('bucket-aggregator', config);
const metrics = createAggregatorMetrics(registry);
const scriptRedis = redis();
// The daily rankings (top lists) are kept TOP_HISTORY_DAYS after a day's last count.
const buckets = new BucketStore({
  redis: scriptRedis,
  rules,
  prefix: config.KEY_PREFIX,
  shards: config.QUEUE_SHARDS,
  rankTtlSeconds: config.TOP_HISTORY_DAYS * 86_400,
});
// The seqs other replicas' sealers set, so that applies to the stores they sealed need no stale retry (a hint:
// while it is not subscribed, such an apply retries once). ioredis subscribes again after a reconnect.
const epochRedis = redis();
buckets.followEpochs(epochRedis).catch((err: unknown) => log.warn({ err }, 'not following the sealers’ epochs'));
registerBacklogGauges(registry, () => readBacklog(buckets, Date.now()));
// REDIS_WAIT_REPLICAS: an events job completes only once that many replicas hold its apply and its work-set
// registration (on a cluster, of the store's master and of its work-set shard's).
const replicated = storeFenceOf({
  replicas: config.REDIS_WAIT_REPLICAS,
  timeoutMs: config.REDIS_WAIT_TIMEOUT_MS,
  connect: redis,
  covered: [scriptRedis],
  keys: redisKeys(config.KEY_PREFIX),
  what: 'the batch',
  warn: (msg) => log.warn(msg),
});
const dynamo = connectDynamo(config);
const TENANT_CACHE_MS = 60_000;
const tenants = createTenantDirectory({ dynamo, table: config.DYNAMODB_TABLE, cacheTtlMs: TENANT_CACHE_MS, log });

// A batch for a store with no tenant is refused (failed set, tally_batches_rejected_total{reason="unknown_store"});
// the store's mark makes @tally/client refuse it at once for as long as this aggregator may cache the answer.
const marks = storeMarks(scriptRedis, config.KEY_PREFIX, TENANT_CACHE_MS);
const timeZoneOf = tenantTimeZones(tenants, marks);
// The rules fingerprint, for @tally/client (it rolls batches up itself only while it runs rules of the same one), the
// dedupe window, for the dlq tool (its replay guard), and how long this aggregator keeps the rankings, for the query
// API's top lists (they read no day a shorter retention may have let expire; recorded again while it runs).
const publish = () =>
  Promise.all([
    marks.rules(rules.fingerprint),
    marks.dedupeWindow(config.DEDUPE_WINDOW_SECONDS),
    recordTopHistory(scriptRedis, redisKeys(config.KEY_PREFIX).topHistory, config.TOP_HISTORY_DAYS, Date.now()),
  ]).catch((err: unknown) => log.warn({ err }, 'rules fingerprint, dedupe window or top history not published; retried'));
void publish();
setInterval(() => void publish(), STORE_ZONE_TTL_MS / 2).unref();

// Stage "apply": each events job's batch is rolled up and applied to the Redis buckets.
const applyBatch = eventsProcessor({
  buckets,
  rules,
  timeZoneOf,
  unknownStores: marks,
  dedupeTtlSeconds: config.DEDUPE_WINDOW_SECONDS,
  metrics,
  log,
  crash,
  replicated,
});
const eventsWorkers = createShardWorkers(QUEUE.events, applyBatch, layout, { ...worker, concurrency: config.AGGREGATOR_CONCURRENCY });
// QUEUE_SHARDS was lowered (or a collector still runs with a higher one): the batches queued on events shards past it
// are applied alike, by a worker of their shard's own while it has any (looked for at start-up, then every 5 minutes).
// The flush jobs stranded on dynamo-writes shards past it are redundant (until the writer acks it, each row comes due
// again when its flush lease ends, and the sealer enqueues its flush again on the row's own shard) and are removed.
leftovers.serve(QUEUE.events, applyBatch, { ...worker, concurrency: config.AGGREGATOR_CONCURRENCY }).discard(QUEUE.dynamoWrites);
// Stages "seal", "fold" and "outbox": one seal job per work-set shard and tick; a replica takes a few shards at
// once, the others take the rest. With REDIS_WAIT_REPLICAS a store moved into its own work-set shard leaves the old
// one only once replicas hold its registration in the new one (on a cluster, the new shard's master's).
const bucketMs = config.BUCKET_SECONDS * 1000;
const hold = replicated && {
  mark: replicated.fence.mark,
  wait: (keys: readonly string[], mark: number) => replicated.fence.wait(keys, 'the moved stores’ registrations', mark),
};
// The seal queue's jobs come from its schedulers alone, so a Worker stranded by a failover (running, taking no job)
// would stop sealing with nothing to show for it: the watchdog closes and starts it again once a tick has waited past
// its bound with the Worker idle (warn log, tally_worker_restarts_total{queue="seal"}; /readyz 503 meanwhile).
const workerRestarts = metricsOn(registry).counter(
  'tally_worker_restarts_total',
  `Workers closed by force and started again because a due job of their queue went untaken for ${STRANDED_AFTER_MS / 1000} s while they ran idle (a stranded blocking connection)`,
  ['queue'],
);
const watchedSealWorker = (connection: RedisConnection) => {
  workerRestarts.inc({ queue: QUEUE.seal }, 0);
  return new WorkerWatchdog({
    queue: queues[QUEUE.seal],
    processor: sealProcessor({ buckets, queues, bucketMs, metrics, log, hold }),
    start: (processor) =>
      shardWorker(QUEUE.seal, processor, queues[QUEUE.seal].opts.prefix!, {
        ...worker,
        connection,
        concurrency: Math.min(config.QUEUE_SHARDS, 4),
      }),
    log,
    onRestart: () => workerRestarts.inc({ queue: QUEUE.seal }),
  });
};
const sealWorker = config.SEALER_ENABLED ? watchedSealWorker(redis()) : undefined;

// Served first: /healthz and /metrics answer (and /readyz says 503) while Redis is not there yet; the schedulers
// are set up once it is (their calls wait for it).
await serve({
  workers: [...eventsWorkers, sealWorker],
  ready: [...eventsWorkers, ...(sealWorker ? [sealWorker] : [])],
  started: {
    bucketSeconds: config.BUCKET_SECONDS,
    sealer: config.SEALER_ENABLED,
    ...(replicated ? { waitReplicas: config.REDIS_WAIT_REPLICAS } : {}),
  },
  close: [{ name: 'dynamodb', run: async () => dynamo.destroy() }],
});
if (sealWorker) {
  sealWorker.start();
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
