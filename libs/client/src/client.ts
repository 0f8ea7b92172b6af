import { clusterNodes } from '@tally/config/host-list';
import {
  checkEvents,
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
import { errorKey } from '@tally/observability/error-key';
import {
  closeConnection,
  createReplicaFence,
  isRedisUnavailable,
  MAX_QUEUE_SHARDS,
  QUEUE,
  QUEUE_LAYOUT,
  QUEUE_SETTINGS,
  QUEUE_SHARDS,
  queuePrefix,
  shardOfStore,
  type RedisConnection,
  type RedisTarget,
} from '@tally/queues';
import { compileRules, defaultRules, type CompiledRules, type EventInput } from '@tally/schema';
import { Queue } from 'bullmq';
import { ClientClosedError } from './errors';

/** Redis nodes: `{ host, port }[]`, or `host:port,host:port` as the apps' environment gives them. */
type RedisNodes = RedisTarget['REDIS_CLUSTER_NODES'] | string;

/** A Redis target as the apps' environment has it: REDIS_CLUSTER_NODES and REDIS_SENTINELS may be `host:port,…`. */
type RedisTargetOption = Omit<RedisTarget, 'REDIS_CLUSTER_NODES' | 'REDIS_SENTINELS'> & {
  REDIS_CLUSTER_NODES?: RedisNodes;
  REDIS_SENTINELS?: RedisNodes;
};

export interface TallyClientOptions {
  /**
   * `redis://…` or a Redis target (`{ REDIS_URL, REDIS_CLUSTER_NODES }` for a Redis Cluster, `REDIS_SENTINELS`,
   * `REDIS_SENTINEL_MASTER` and `REDIS_SENTINEL_PASSWORD` for Redis Sentinel; the nodes as `{ host, port }[]` or as the
   * apps' `host:port,host:port`): the client opens and closes its own fail-fast producer connection. Or an ioredis
   * instance made with createProducerConnection (the caller keeps it and quits it).
   */
  connection: string | RedisTargetOption | RedisConnection;
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
  /**
   * Called for Redis connection errors (default: ignored; calls fail with QueueUnavailableError meanwhile): each
   * distinct error (code and message, less the delays and counts that change at each attempt) once until a connection
   * of the client is ready again, not at every reconnect.
   */
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
   * and the connections it opened (QUIT, answered within 1 s, else dropped). Calling it again returns the same promise.
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
  const { target, wait, idempotencyWindowSeconds, keyPrefix, shards, limits, readyTimeoutMs, backpressure } = checkOptions(opts);
  const owned = target !== undefined;
  const redis = target !== undefined ? createProducerConnection(target) : (opts.connection as RedisConnection);
  const onError = opts.onError ?? (() => {});
  const errors = oncePerOutage(onError);
  if (owned) redis.on('error', errors.report);
  // The shards of `events`, the one queue the client writes (the intake's `queues`, and the depths of backpressure);
  // not createQueues' others (seal, dynamo-writes, maintenance), which it never uses: each BullMQ Queue would only
  // re-emit the connection's errors.
  const layout = { keyPrefix, shards };
  const events = Array.from(
    { length: shards },
    (_, shard) =>
      new Queue(QUEUE.events, {
        connection: redis,
        prefix: queuePrefix(layout, QUEUE.events, shard),
        defaultJobOptions: QUEUE_SETTINGS.events.jobs,
      }),
  );
  for (const q of events) q.on('error', errors.report);
  const queues = {
    events: events[0]!,
    [QUEUE_SHARDS]: { [QUEUE.events]: events, [QUEUE.seal]: [], [QUEUE.dynamoWrites]: [], [QUEUE.maintenance]: [] },
    [QUEUE_LAYOUT]: layout,
  };
  // The waits for replicas block their connection: one of their own, to `target` or a duplicate of the caller's.
  const waitRedis = !wait
    ? undefined
    : target
      ? createProducerConnection(target, { connectionName: 'tally-replica-wait', commandTimeoutMs: wait.timeoutMs + 5_000 })
      : (redis as { duplicate(): RedisConnection }).duplicate();
  waitRedis?.on('error', errors.report);
  // An outage ends when a connection is ready again: its errors are news again after that.
  for (const conn of [redis, waitRedis]) conn?.on('ready', errors.outageOver);
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
  const admit = depthGate(events, backpressure);
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
    async enqueueEvents(store, input, eopts) {
      if (closing) throw new ClientClosedError();
      // What a caller without a type checker may get wrong, refused before the wait for Redis: no array of events; a
      // third argument that is not the options (a key given as a string) or holds an option not known, which would
      // drop it unseen (the idempotency of the call with it).
      checkEvents(input);
      checkEnqueueOptions(eopts);
      const call = enqueue(store, input, eopts);
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
        await Promise.all(events.map((q) => q.close()));
        if (waitRedis) await closeConnection(waitRedis);
        if (owned) await closeConnection(redis);
        else redis.off('ready', errors.outageOver);
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

/**
 * `onError` told each distinct error once per outage: while Redis is down every reconnect fails with the same error
 * again, and each BullMQ queue on the connection re-emits it (one line per distinct error, as the collector logs
 * them: errorKey, the code and message less the delays and counts that change at each attempt, such as the delay
 * ioredis names in each round of Sentinels it found down). `outageOver` (a connection of the client ready again) makes
 * every error news again.
 */
function oncePerOutage(onError: (err: Error) => void): { report: (err: Error) => void; outageOver: () => void } {
  const told = new Set<string>();
  return {
    report(err) {
      const key = errorKey(err);
      if (told.has(key)) return;
      if (told.size >= 1_000) told.clear(); // a flood of distinct messages must not grow it for ever
      told.add(key);
      onError(err);
    },
    outageOver: () => told.clear(),
  };
}

/**
 * InvalidArgumentError on `field` for the keys of `o` that `known` does not have (`what` names them in the message):
 * an option misspelt by a caller without a type checker (`keyprefix`) would be ignored unseen. Only the keys are
 * shown: an object given in the wrong place may hold a password.
 */
function onlyKnownKeys(o: object, known: Record<string, true>, field: InvalidArgumentError['field'], what: string): void {
  const unknown = Object.keys(o).filter((k) => !Object.hasOwn(known, k));
  if (unknown.length === 0) return;
  const names = Object.keys(known);
  const meant = unknown.flatMap((k) => names.filter((n) => n.toLowerCase() === k.toLowerCase()).map((n) => `${k}: ${n}?`));
  throw new InvalidArgumentError(
    field,
    `${what} ${unknown.map((k) => JSON.stringify(k)).join(', ')} ${unknown.length === 1 ? 'is' : 'are'} unknown` +
      `${meant.length > 0 ? ` (${meant.join('; ')})` : ''}: ${what}s are ${names.join(', ')}; nothing was opened or enqueued`,
  );
}

/** The options of createTallyClient (the type checks that this is all of them). */
const OPTIONS: Record<keyof TallyClientOptions, true> = {
  connection: true,
  keyPrefix: true,
  queueShards: true,
  idempotencyWindowSeconds: true,
  rules: true,
  limits: true,
  readyTimeoutMs: true,
  onError: true,
  backpressure: true,
  waitReplicas: true,
};
const LIMITS: Record<keyof IntakeLimits, true> = { maxEvents: true, clockSkewSeconds: true, latenessHorizonDays: true };
const BACKPRESSURE: Record<'maxDepth' | 'checkEveryMs', true> = { maxDepth: true, checkEveryMs: true };
const WAIT_REPLICAS: Record<keyof NonNullable<TallyClientOptions['waitReplicas']>, true> = { replicas: true, timeoutMs: true };
const TARGET: Record<keyof RedisTargetOption, true> = {
  REDIS_URL: true,
  REDIS_CLUSTER_NODES: true,
  REDIS_SENTINELS: true,
  REDIS_SENTINEL_MASTER: true,
  REDIS_SENTINEL_PASSWORD: true,
};
const ENQUEUE_OPTIONS: Record<keyof EnqueueOptions, true> = { idempotencyKey: true, receivedAt: true, timeZone: true };

/** enqueueEvents' third argument: undefined or an object of its options, else InvalidArgumentError on `options`. */
function checkEnqueueOptions(eopts: unknown): asserts eopts is EnqueueOptions | undefined {
  if (eopts === undefined) return;
  if (typeof eopts !== 'object' || eopts === null || Array.isArray(eopts)) {
    const given = typeof eopts === 'string' ? JSON.stringify(eopts) : Array.isArray(eopts) ? 'an array' : String(eopts);
    throw new InvalidArgumentError(
      'options',
      `enqueueEvents' third argument ${given} is invalid: its options, { idempotencyKey?, receivedAt?, timeZone? }` +
        `${typeof eopts === 'string' ? ` (an idempotency key: { idempotencyKey: ${given} })` : ''}; nothing was enqueued`,
    );
  }
  onlyKnownKeys(eopts, ENQUEUE_OPTIONS, 'options', 'enqueueEvents option');
}

/** A Redis node `{ host, port }` as ioredis takes it (a host, a port from 1 to 65535). */
const isNode = (n: unknown): n is { host: string; port: number } => {
  const { host, port } = (n ?? {}) as { host?: unknown; port?: unknown };
  return typeof host === 'string' && host.length > 0 && Number.isInteger(port) && (port as number) >= 1 && (port as number) <= 65_535;
};

/**
 * A Redis target given as an object, with its nodes as `{ host, port }[]`: `host:port,…` read by libs/config's parser of
 * the apps' REDIS_CLUSTER_NODES and REDIS_SENTINELS (empty is unset, as there); anything else InvalidArgumentError.
 */
function checkTarget(t: Record<string, unknown>): RedisTarget {
  onlyKnownKeys(t, TARGET, 'connection', 'Redis target key');
  const nodes = (name: 'REDIS_CLUSTER_NODES' | 'REDIS_SENTINELS') => {
    const v = t[name];
    if (v === undefined || v === '') return undefined;
    if (typeof v === 'string') {
      const parsed = clusterNodes.safeParse(v);
      if (parsed.success) return parsed.data;
      throw new InvalidArgumentError(
        'connection',
        `connection.${name} ${JSON.stringify(v)} is invalid: ${parsed.error.issues[0]!.message}`,
      );
    }
    if (Array.isArray(v) && v.every(isNode)) return v.map(({ host, port }) => ({ host, port }));
    throw new InvalidArgumentError(
      'connection',
      `connection.${name} is invalid: an array of { host, port } (ports from 1 to 65535), or host:port,host:port as the apps' ${name}`,
    );
  };
  const [REDIS_CLUSTER_NODES, REDIS_SENTINELS] = [nodes('REDIS_CLUSTER_NODES'), nodes('REDIS_SENTINELS')];
  if (REDIS_CLUSTER_NODES?.length && REDIS_SENTINELS?.length) {
    throw new InvalidArgumentError(
      'connection',
      'connection has both REDIS_CLUSTER_NODES and REDIS_SENTINELS: a target is one or the other',
    );
  }
  for (const name of ['REDIS_SENTINEL_MASTER', 'REDIS_SENTINEL_PASSWORD'] as const) {
    if (t[name] !== undefined && typeof t[name] !== 'string')
      throw new InvalidArgumentError('connection', `connection.${name} is invalid: a string`);
  }
  return {
    REDIS_URL: t['REDIS_URL'] as string, // createProducerConnection checks it
    REDIS_CLUSTER_NODES,
    REDIS_SENTINELS,
    // Empty is unset, as in the apps' environment.
    REDIS_SENTINEL_MASTER: (t['REDIS_SENTINEL_MASTER'] as string | undefined) || undefined,
    REDIS_SENTINEL_PASSWORD: (t['REDIS_SENTINEL_PASSWORD'] as string | undefined) || undefined,
  };
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
  onlyKnownKeys(opts, OPTIONS, 'options', 'option');
  for (const [field, value, known] of [
    ['limits', opts.limits, LIMITS],
    ['backpressure', opts.backpressure, BACKPRESSURE],
    ['waitReplicas', opts.waitReplicas, WAIT_REPLICAS],
  ] as const) {
    if (field === 'limits' && value !== undefined && (typeof value !== 'object' || value === null)) {
      throw new InvalidArgumentError(
        'limits',
        `limits ${String(value)} is invalid: { maxEvents?, clockSkewSeconds?, latenessHorizonDays? }`,
      );
    }
    if (typeof value === 'object' && value !== null) onlyKnownKeys(value, known, field, `${field} key`);
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
    target: typeof c === 'string' ? { REDIS_URL: c } : isConnection(c as object) ? undefined : checkTarget(c as Record<string, unknown>),
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
    limits: checkClientLimits(opts.limits),
  };
}

/**
 * The collector's defaults but 100,000 events a call, checked as createIntake does; a key given as undefined is
 * absent, as any other option's. The lateness horizon in whole days, as the apps' LATENESS_HORIZON_DAYS (createIntake
 * takes a fraction of a day, which its tests use).
 */
function checkClientLimits(given: Partial<IntakeLimits> | undefined): IntakeLimits {
  const set = Object.fromEntries(Object.entries(given ?? {}).filter(([, v]) => v !== undefined)) as Partial<IntakeLimits>;
  const days = set.latenessHorizonDays;
  if (days !== undefined && !(Number.isInteger(days) && days >= 1 && days <= 3_650)) {
    throw new InvalidArgumentError(
      'limits',
      `limits.latenessHorizonDays ${days} is invalid: a whole number of days, at least 1, at most 3650 (as LATENESS_HORIZON_DAYS)`,
    );
  }
  return checkLimits({ ...DEFAULT_INTAKE_LIMITS, maxEvents: 100_000, ...set });
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
