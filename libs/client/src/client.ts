import {
  checkLimits,
  createIntake,
  createProducerConnection,
  DEFAULT_INTAKE_LIMITS,
  InvalidArgumentError,
  QueueFullError,
  QueueUnavailableError,
  ValidationError,
  waitForReady,
  type EnqueueOptions,
  type IntakeLimits,
} from '@tally/intake';
import { redisKeys } from '@tally/key-layout';
import {
  allQueues,
  closeConnection,
  closeQueues,
  createQueues,
  createReplicaFence,
  isRedisUnavailable,
  MAX_QUEUE_SHARDS,
  QUEUE,
  queueShards,
  shardOfStore,
  type RedisConnection,
  type RedisTarget,
  type TallyQueues,
} from '@tally/queues';
import { compileRules, defaultRules, type CompiledRules, type EventInput } from '@tally/schema';
import type { Queue } from 'bullmq';
import { ClientClosedError } from './errors';

export interface TallyClientOptions {
  /**
   * `redis://…` or a Redis target (`{ REDIS_URL, REDIS_CLUSTER_NODES }` for a Redis Cluster, `REDIS_SENTINELS`,
   * `REDIS_SENTINEL_MASTER` and `REDIS_SENTINEL_PASSWORD` for Redis Sentinel): the client opens
   * and closes its own fail-fast producer connection. Or an ioredis instance made with createProducerConnection
   * (the caller keeps it and quits it).
   */
  connection: string | RedisTarget | RedisConnection;
  /** The installation's KEY_PREFIX (default `t`; 1-16 lower-case letters and digits): its queues' prefixes derive from it. */
  keyPrefix?: string;
  /** The installation's QUEUE_SHARDS (default 1; 1 to 256): a batch goes to its store's shard of the events queue. */
  queueShards?: number;
  /**
   * The installation's DEDUPE_WINDOW_SECONDS (seconds, 60 to 30 days; default 86,400), used only while no aggregator
   * publishes its own in Redis (they do at start and every 5 minutes; the client reads it at most once a minute). An
   * idempotency key stays bound to its batch's events for two windows (plus 10%, at least 5 minutes), and a
   * `receivedAt` may be a tenth of it old.
   */
  idempotencyWindowSeconds?: number;
  /** Default: the built-in e-commerce rules. Must be the rules the aggregator runs with. */
  rules?: CompiledRules;
  /** Default: the collector's defaults, except 100,000 events per call (split into jobs of MAX_EVENTS_PER_JOB). */
  limits?: Partial<IntakeLimits>;
  /** How long a call waits for Redis while it (re)connects before throwing QueueUnavailableError. Default 5000 (ms, from 0). */
  readyTimeoutMs?: number;
  /** Called for Redis connection errors (default: ignored; calls fail with QueueUnavailableError meanwhile). */
  onError?: (err: Error) => void;
  /**
   * Backpressure, as the collector's MAX_QUEUE_DEPTH: while the store's events queue shard holds more than `maxDepth`
   * waiting jobs (1 to 10,000,000), calls for the store throw QueueFullError and enqueue nothing. The depths are read at
   * most every `checkEveryMs` (default 250), by the call that finds them older. Default `{ maxDepth: 10_000 }`; `false`
   * turns it off.
   */
  backpressure?: { maxDepth: number; checkEveryMs?: number } | false;
  /**
   * The collector's REDIS_WAIT_REPLICAS: each call resolves only once `replicas` Redis replicas hold its batch
   * (`WAIT`, at most `timeoutMs` each, default 1000; up to twice that for a call that comes while one is in flight), so a failover to a promoted replica cannot lose it; fewer in time
   * throws ReplicasBehindError (Redis holds the batch: retry with the same idempotency key, which counts it once; a call
   * without one was given one, named by the error's `idempotencyKey`).
   * The waits go on a connection of their own: a duplicate of `connection` when it is an ioredis instance (its
   * command timeout must be longer than `timeoutMs`).
   */
  waitReplicas?: { replicas: number; timeoutMs?: number };
}

export interface TallyClient {
  /**
   * Validates every event like the collector does and enqueues them for `store`, all or nothing: one invalid
   * event rejects the call with a ValidationError listing each bad event, index, field and reason. Resolves once
   * Redis holds the batch. With `idempotencyKey`, a retried call is counted once.
   * Throws TooManyEventsError, InvalidArgumentError (a bad store id, key, receivedAt or timeZone, or no events), ValidationError, IdempotencyConflictError, UnknownStoreError
   * (the aggregator refused a batch for this store lately: it has no tenant), QueueFullError (the queue is over
   * its backpressure limit), QueueUnavailableError or, once close() was called, ClientClosedError.
   */
  enqueueEvents(store: string, events: readonly EventInput[], opts?: EnqueueOptions): Promise<{ batchId: string; accepted: number }>;
  /**
   * Refuses new calls (ClientClosedError), waits for the calls in flight to settle, then closes the client's queues
   * and the connections it opened. Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

/**
 * The queue path into Tally for trusted services (docs/DESIGN.md data flow), with the collector's validation.
 * An option out of range throws InvalidArgumentError (its `field` names the option) before any connection is opened.
 */
export function createTallyClient(opts: TallyClientOptions): TallyClient {
  // Every option is checked before a connection is opened: one left open by a throw would reconnect forever and keep
  // the caller's process from exiting.
  const { wait, idempotencyWindowSeconds, keyPrefix, shards, limits, readyTimeoutMs, backpressure } = checkOptions(opts);
  const c = opts.connection;
  const target = typeof c === 'string' ? { REDIS_URL: c } : isConnection(c) ? undefined : c;
  const owned = target !== undefined;
  const redis = target !== undefined ? createProducerConnection(target) : (c as RedisConnection);
  const onError = opts.onError ?? (() => {});
  if (owned) redis.on('error', onError);
  const queues: TallyQueues = createQueues(redis, { keyPrefix, shards });
  for (const q of allQueues(queues)) q.on('error', onError);
  // The waits for replicas block their connection: one of their own, to `target` or a duplicate of the caller's.
  const waitRedis = !wait
    ? undefined
    : target
      ? createProducerConnection(target, { connectionName: 'tally-replica-wait', commandTimeoutMs: wait.timeoutMs + 5_000 })
      : (redis as { duplicate(): RedisConnection }).duplicate();
  waitRedis?.on('error', onError);
  const rules = opts.rules ?? compileRules(defaultRules);
  const intake = createIntake({
    queues,
    redis,
    rules,
    limits,
    source: 'client',
    // enqueueEvents waits for the connection itself, before its first Redis call; the intake then refuses at once.
    readyTimeoutMs: 0,
    unknownStoreKey: redisKeys(keyPrefix).unknownStore,
    rulesKey: redisKeys(keyPrefix).rules,
    onRulesDiffer: (theirs, own) =>
      onError(
        new Error(
          `the aggregators run rules ${theirs}, this client ${own}: batches go as events for them to roll up; pass rules: loadRules(<their RULES_FILE>)`,
        ),
      ),
    idempotencyWindowSeconds,
    dedupeWindowKey: redisKeys(keyPrefix).dedupeWindow,
    ...(wait && waitRedis && { replicaFence: createReplicaFence(waitRedis, wait.replicas, wait.timeoutMs, [redis]) }),
  });
  const admit = depthGate(queueShards(queues, QUEUE.events), backpressure);
  const zoneOf = storeZones(redis, keyPrefix);
  /**
   * A call a read of which Redis did not answer (connected, but a command timed out) fails now rather than wait as
   * long again for its batch: a bad batch with a ValidationError, as the intake refuses it while Redis is away.
   */
  const unanswered = (err: Error, store: string, events: readonly EventInput[], eopts?: EnqueueOptions): never => {
    const now = Date.now();
    const { errors } = intake.validate(events, now);
    // A call with a key may be the retry of a batch accepted before some events grew too old (Intake.submit).
    const retry = eopts?.idempotencyKey !== undefined && intake.validate(events, now, { lateness: false }).errors.length === 0;
    if (errors.length > 0 && !retry) throw new ValidationError(errors);
    intake.checkArgs(store, events.length, eopts ?? {});
    const unavailable = new QueueUnavailableError(`Redis did not answer: ${err.message}; nothing was enqueued`, { cause: err });
    unavailable.idempotencyKey = eopts?.idempotencyKey;
    throw unavailable;
  };
  const enqueue = async (store: string, events: readonly EventInput[], eopts?: EnqueueOptions) => {
    // A (re)connecting connection is waited for, at most readyTimeoutMs, before any call on it: BullMQ's own calls
    // would wait unbounded for one that was never ready. If it is still not ready, the intake validates the events
    // and then throws QueueUnavailableError.
    const ready = await waitForReady(redis, readyTimeoutMs).then(
      () => true,
      () => false,
    );
    // With the store's zone (as the aggregator published it from the tenant) the batch goes rolled up, as the
    // collector sends it, but only while the aggregators publish the fingerprint of this client's rules (the
    // intake's `rulesKey`): rows rolled up by other rules would be counted as they are. Otherwise it goes as
    // events the aggregator rolls up. The caller's zone goes to the intake even while Redis is not ready, which
    // checks it (InvalidArgumentError) before it finds Redis away.
    let timeZone = eopts?.timeZone;
    if (ready) {
      try {
        await admit(store);
        timeZone ??= await zoneOf(store);
      } catch (err) {
        if (!isRedisUnavailable(err)) throw err;
        unanswered(err as Error, store, events, eopts);
      }
    }
    const { batchId, accepted } = await intake.submit(store, events, { ...eopts, timeZone });
    return { batchId, accepted };
  };
  const inFlight = new Set<Promise<unknown>>();
  let closing: Promise<void> | undefined;
  return {
    async enqueueEvents(store, events, eopts) {
      if (closing) throw new ClientClosedError();
      const call = enqueue(store, events, eopts);
      inFlight.add(call);
      try {
        return await call;
      } finally {
        inFlight.delete(call);
      }
    },
    close() {
      closing ??= (async () => {
        await Promise.allSettled(inFlight);
        await closeQueues(queues);
        if (waitRedis) await closeConnection(waitRedis);
        if (owned) await closeConnection(redis);
      })();
      return closing;
    },
  };
}

/** Whether `c` is a connection (an ioredis Redis or Cluster), rather than a Redis target or other options. */
function isConnection(c: object): c is RedisConnection {
  const o = c as Partial<Record<'status' | 'on' | 'once' | 'off', unknown>>;
  return typeof o.status === 'string' && typeof o.on === 'function' && typeof o.once === 'function' && typeof o.off === 'function';
}

/** KEY_PREFIX's format (libs/config env.schema.ts): an installation's apps run with no other. */
const KEY_PREFIX = /^[a-z][a-z0-9]{0,15}$/;

type CheckedField = 'idempotencyWindowSeconds' | 'queueShards' | 'readyTimeoutMs' | 'backpressure';

/** `value` when a whole number from `min` to `max`, else InvalidArgumentError on `field` saying what it must be. */
function whole(field: CheckedField, name: string, value: unknown, min: number, max: number, as: string): number {
  if (Number.isInteger(value) && (value as number) >= min && (value as number) <= max) return value as number;
  throw new InvalidArgumentError(field, `${name} ${String(value)} is invalid: a whole number from ${min} to ${max}${as}`);
}

/** The options with their defaults, or InvalidArgumentError naming the first one out of range (nothing opened yet). */
function checkOptions(opts: TallyClientOptions) {
  const must = 'a redis:// URL, a Redis target ({ REDIS_URL, … }) or an ioredis instance made with createProducerConnection';
  if (typeof opts !== 'object' || opts === null) {
    throw new InvalidArgumentError(
      'connection',
      `createTallyClient takes its options, { connection, … } (got ${String(opts)}): connection is ${must}`,
    );
  }
  const c = opts.connection as unknown;
  if (typeof c !== 'string' && (typeof c !== 'object' || c === null))
    throw new InvalidArgumentError('connection', `connection ${String(c)} is invalid: ${must}`);
  // Only its keys: other options (BullMQ's { host, port, password }) may hold a password.
  if (typeof c === 'object' && !('REDIS_URL' in c) && !isConnection(c)) {
    throw new InvalidArgumentError(
      'connection',
      `connection { ${Object.keys(c).join(', ')} } is invalid: ${must} (for { host, port }: redis://host:port)`,
    );
  }
  const r = opts.rules as Partial<CompiledRules> | null | undefined;
  if (r !== undefined && (typeof r?.fingerprint !== 'string' || !(r.eventTypes instanceof Map))) {
    throw new InvalidArgumentError(
      'rules',
      'rules is invalid: compiled rules, as loadRules(path) or compileRules(object) return (not the rules object itself)',
    );
  }
  if (opts.onError !== undefined && typeof opts.onError !== 'function') {
    throw new InvalidArgumentError(
      'onError',
      `onError ${JSON.stringify(opts.onError)} is invalid: a function, called with each Redis connection error`,
    );
  }
  const keyPrefix = opts.keyPrefix ?? 't';
  if (typeof keyPrefix !== 'string' || !KEY_PREFIX.test(keyPrefix)) {
    throw new InvalidArgumentError(
      'keyPrefix',
      `keyPrefix ${JSON.stringify(keyPrefix)} is invalid: 1-16 lower-case letters and digits starting with a letter, as KEY_PREFIX`,
    );
  }
  const backpressure = opts.backpressure ?? { maxDepth: 10_000 };
  if (backpressure !== false) {
    const b = (typeof backpressure === 'object' ? backpressure : {}) as Partial<typeof backpressure>;
    whole('backpressure', 'backpressure.maxDepth', b.maxDepth, 1, 10_000_000, ' (as MAX_QUEUE_DEPTH), or backpressure false');
    whole('backpressure', 'backpressure.checkEveryMs', b.checkEveryMs ?? 250, 0, Number.MAX_SAFE_INTEGER, ' (ms; default 250)');
  }
  return {
    wait: checkWaitReplicas(opts.waitReplicas),
    idempotencyWindowSeconds: whole(
      'idempotencyWindowSeconds',
      'idempotencyWindowSeconds',
      opts.idempotencyWindowSeconds ?? 86_400,
      60,
      30 * 86_400,
      ' seconds (30 days), as DEDUPE_WINDOW_SECONDS',
    ),
    keyPrefix,
    shards: whole('queueShards', 'queueShards', opts.queueShards ?? 1, 1, MAX_QUEUE_SHARDS, ", the installation's QUEUE_SHARDS"),
    // setTimeout's longest delay: a longer one would be cut to 1 ms.
    readyTimeoutMs: whole('readyTimeoutMs', 'readyTimeoutMs', opts.readyTimeoutMs ?? 5_000, 0, 2_147_483_647, ' ms'),
    backpressure,
    // The collector's defaults but 100,000 events a call, checked as createIntake does.
    limits: checkLimits({ ...DEFAULT_INTAKE_LIMITS, maxEvents: 100_000, ...opts.limits }),
  };
}

/** `waitReplicas` with its default timeout, or InvalidArgumentError. */
function checkWaitReplicas(w: TallyClientOptions['waitReplicas'] | null): { replicas: number; timeoutMs: number } | undefined {
  if (w === undefined) return undefined;
  const timeoutMs = w?.timeoutMs ?? 1_000;
  if (
    w !== null &&
    Number.isInteger(w.replicas) &&
    w.replicas >= 1 &&
    w.replicas <= 16 &&
    Number.isInteger(timeoutMs) &&
    timeoutMs >= 10 &&
    timeoutMs <= 60_000
  ) {
    return { replicas: w.replicas, timeoutMs };
  }
  throw new InvalidArgumentError(
    'waitReplicas',
    `waitReplicas ${JSON.stringify(w)} is invalid: replicas is a whole number from 1 to 16, timeoutMs one from 10 to 60000`,
  );
}

/**
 * Throws QueueFullError while the waiting jobs of the store's events shard are over `maxDepth` (as the collector's
 * MAX_QUEUE_DEPTH, per shard: a backlog in one shard does not refuse the stores of the others). A call reads its
 * store's shard again when that shard's last read is older than `checkEveryMs` (one read at a time per shard, shared
 * by the calls waiting on it). A read Redis did not answer (isRedisUnavailable) throws its error to the calls waiting
 * on it, for that shard only (on a Cluster with a master down the other masters' stores still pass); another failed
 * read lets them through.
 */
export function depthGate(shards: readonly Queue[], o: TallyClientOptions['backpressure']): (store: string) => Promise<void> {
  if (!o) return async () => {};
  const depths = new Array<number>(shards.length).fill(0);
  const readAt = new Array<number>(shards.length).fill(-Infinity);
  const reading = new Array<Promise<void> | undefined>(shards.length).fill(undefined);
  const read = async (shard: number) => {
    try {
      depths[shard] = await shards[shard]!.getWaitingCount();
      readAt[shard] = performance.now();
    } catch (err) {
      depths[shard] = 0;
      if (isRedisUnavailable(err)) throw err;
    }
  };
  return async (store) => {
    const shard = shardOfStore(store, shards.length);
    if (performance.now() - readAt[shard]! >= (o.checkEveryMs ?? 250)) {
      await (reading[shard] ??= read(shard).finally(() => (reading[shard] = undefined)));
    }
    const depth = depths[shard]!;
    if (depth > o.maxDepth) throw new QueueFullError(depth, o.maxDepth);
  };
}

/** How long the client keeps a store's published time zone before reading it again. */
const ZONE_CACHE_MS = 60_000;
/**
 * How long it keeps the zone's absence: short, since the aggregator publishes the zone with the store's first batch
 * (a client started with the fleet would otherwise send a minute of events to roll up twice).
 */
const NO_ZONE_CACHE_MS = 1_000;

/**
 * The store's time zone as the aggregator publishes it (libs/key-layout `storeZone`), read at most once a minute
 * per store (once a second while none is); undefined while none is published (a store no aggregator has found a
 * tenant for yet) or the read fails but for Redis not answering (isRedisUnavailable), which it throws.
 */
function storeZones(redis: Pick<RedisConnection, 'get'>, keyPrefix: string): (store: string) => Promise<string | undefined> {
  const key = redisKeys(keyPrefix).storeZone;
  const cache = new Map<string, { zone: string | undefined; until: number }>();
  return async (store) => {
    const hit = cache.get(store);
    if (hit && hit.until > performance.now()) return hit.zone;
    const zone =
      (await redis.get(key(store)).catch((err: unknown) => {
        if (isRedisUnavailable(err)) throw err;
        return null;
      })) ?? undefined;
    if (cache.size >= 100_000) cache.clear();
    cache.set(store, { zone, until: performance.now() + (zone === undefined ? NO_ZONE_CACHE_MS : ZONE_CACHE_MS) });
    return zone;
  };
}
