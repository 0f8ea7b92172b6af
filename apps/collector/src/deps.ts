import { createKeyLookupsThrottledCounter } from '@tally/http';
import { createIntake, createProducerConnection } from '@tally/intake';
import type { CollectorConfig } from '@tally/config';
import { connectDynamo } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { createMetrics, logEmitterErrors, queueDepthMetrics, type Logger } from '@tally/observability';
import {
  allQueues,
  closeConnection,
  closeQueues,
  createQueues,
  createReplicaFence,
  queueShards,
  warnOnTooFewReplicas,
  QUEUE,
  type RedisConnection,
  type TallyQueues,
} from '@tally/queues';
import type { CompiledRules } from '@tally/schema';
import { createTenantDirectory } from '@tally/tenants';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { CollectorDeps } from './app';
import { createBackpressure, type Backpressure } from './backpressure';
import { createIngestBudget } from './ingest-budget';
import { createCollectorMetrics } from './metrics';

export interface CollectorResources {
  deps: CollectorDeps;
  redis: RedisConnection;
  /** REDIS_WAIT_REPLICAS > 0: the connection of the waits for replicas (WAIT blocks its connection). */
  waitRedis: RedisConnection | undefined;
  queues: TallyQueues;
  dynamo: DynamoDBClient;
  backpressure: Backpressure;
  /** Marks the collector as closing (503 on /v1/events, /readyz not ready). */
  beginClosing(): void;
}

/**
 * Builds everything the app needs from the config: the fail-fast producer connection and queues, the tenant
 * directory on a DynamoDB client with a short deadline, the intake core, backpressure and metrics. Nothing waits
 * for Redis or DynamoDB: the collector starts (and answers 503) while they are away.
 */
export function createCollectorDeps(config: CollectorConfig, log: Logger, rules: CompiledRules): CollectorResources {
  const { registry } = createMetrics({ app: 'collector' });
  const metrics = createCollectorMetrics(registry);

  const redis = createProducerConnection(config);
  const queues = createQueues(redis, { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
  const waitRedis =
    config.REDIS_WAIT_REPLICAS > 0
      ? createProducerConnection(config, { connectionName: 'tally-replica-wait', commandTimeoutMs: config.REDIS_WAIT_TIMEOUT_MS + 5_000 })
      : undefined;
  if (waitRedis) warnOnTooFewReplicas(waitRedis, config.REDIS_WAIT_REPLICAS, (msg) => log.warn(msg));
  // ioredis reports every failed reconnect: one line per distinct error and 10 s.
  logEmitterErrors(log, 'redis', [redis, ...allQueues(queues), ...(waitRedis ? [waitRedis] : [])]);
  const eventsShards = queueShards(queues, QUEUE.events);
  queueDepthMetrics(registry, [...eventsShards]);

  const dynamo = connectDynamo(config, { maxAttempts: 2, requestTimeoutMs: config.KEY_LOOKUP_TIMEOUT_MS });
  const keyLookupsThrottled = createKeyLookupsThrottledCounter(registry);
  const directory = createTenantDirectory({
    dynamo,
    table: config.DYNAMODB_TABLE,
    cacheTtlMs: config.KEY_CACHE_TTL_MS,
    log: log.child({ component: 'tenants' }),
    // Keys not cached as existing are looked up within a budget per process: made-up keys cannot drive one DynamoDB
    // read each (past it, 503 without a lookup).
    unknownKeyLookupsPerSecond: config.UNKNOWN_KEY_LOOKUPS_PER_SECOND,
    onUnknownKeyLookupRefused: () => keyLookupsThrottled.inc(),
  });

  const intake = createIntake({
    queues,
    redis,
    rules,
    source: 'http',
    // Rolled up here only while the aggregators run the same rules (a rolling deploy of RULES_FILE): else as events.
    rulesKey: redisKeys(config.KEY_PREFIX).rules,
    onRulesDiffer: (theirs, own) =>
      log.warn(
        { theirs, own },
        'the aggregators publish another rules fingerprint than this collector: batches go as events for them to roll up (give both the same RULES_FILE)',
      ),
    ...(waitRedis && { replicaFence: createReplicaFence(waitRedis, config.REDIS_WAIT_REPLICAS, config.REDIS_WAIT_TIMEOUT_MS, [redis]) }),
    // The window the aggregators run (they publish it), this collector's own until one is published.
    dedupeWindowKey: redisKeys(config.KEY_PREFIX).dedupeWindow,
    idempotencyWindowSeconds: config.DEDUPE_WINDOW_SECONDS,
    limits: {
      maxEvents: config.MAX_EVENTS_PER_REQUEST,
      clockSkewSeconds: config.CLOCK_SKEW_SECONDS,
      latenessHorizonDays: config.LATENESS_HORIZON_DAYS,
    },
  });
  const backpressure = createBackpressure({
    // Each store against its own shard's depth (the shard its batches go to), read once per shard per poll.
    shards: eventsShards,
    redis,
    maxDepth: config.MAX_QUEUE_DEPTH,
    log,
  });

  let closing = false;
  const deps: CollectorDeps = {
    log,
    registry,
    metrics,
    intake,
    directory,
    backpressure,
    budget: createIngestBudget({
      redis,
      keyPrefix: config.KEY_PREFIX,
      eventsPerSecond: config.INGEST_BUDGET_EVENTS_PER_SECOND,
      burstSeconds: config.INGEST_BUDGET_BURST_SECONDS,
      minEventsPerRequest: config.INGEST_MIN_EVENTS_PER_REQUEST,
    }),
    maxBodyBytes: config.MAX_BODY_BYTES,
    metricsToken: config.METRICS_TOKEN,
    isClosing: () => closing,
    // Ready only while /v1/events admits (backpressure.redisUp: some events shard read recently), so a load balancer's
    // first 200 is never a 503 but for the stores of a shard still unreadable (a Cluster master down), refused alone.
    isReady: async () => !closing && backpressure.redisUp && (await redis.ping()) === 'PONG',
  };
  return {
    deps,
    redis,
    waitRedis,
    queues,
    dynamo,
    backpressure,
    beginClosing: () => {
      closing = true;
    },
  };
}

/** Closes what createCollectorDeps opened (tests; main runs the same as shutdown steps). */
export async function closeCollectorDeps(r: CollectorResources): Promise<void> {
  r.backpressure.stop();
  await closeQueues(r.queues);
  await closeRedis(r);
  r.dynamo.destroy();
}

/** Quits the collector's Redis connections. */
export const closeRedis = (r: CollectorResources) => Promise.all([r.redis, r.waitRedis].map((c) => c && closeConnection(c)));
