import { redisKeys } from '@tally/key-layout';
import type { RedisConnection } from '@tally/queues';

/**
 * Each store's ingest budget: a token bucket of events in Redis (one hash per store, shared by every collector).
 * It holds up to `eventsPerSecond × burstSeconds` tokens and refills at `eventsPerSecond`. A request takes one token
 * per event, and at least `minEventsPerRequest` (INGEST_MIN_EVENTS_PER_REQUEST): each request creates a job and a
 * dedupe record whatever its size, so a store's requests per second are bounded by its rate / that minimum. A batch
 * larger than the whole bucket passes once the bucket is full and leaves it in debt (negative): the store's next
 * batches wait until the rate has paid for it, so over any span a store is charged at most its rate × the span plus
 * the larger of the bucket and one request, whatever the batch sizes. A store's tenant record may set its own rate
 * (Principal.ingestEventsPerSecond).
 *
 * The clock is the collector's (`now`, injected in tests), passed to the script: Redis TIME would ignore it.
 */
export interface IngestBudget {
  /**
   * Takes the cost of a request of `events` events (at least the minimum per request) from the store's bucket: 0
   * when the bucket held it, or was full for a cost larger than the bucket (taken, possibly into debt), else the
   * milliseconds until it will (nothing taken). `ownRate` is the store's own events per second, when its tenant
   * record sets one. Throws when Redis fails (the caller admits the batch: backpressure answers for Redis).
   */
  take(store: string, events: number, ownRate?: number): Promise<number>;
  /** The rate, bucket size and least cost of a request that apply to a store (for the 429's detail). */
  limitOf(ownRate?: number): { eventsPerSecond: number; burst: number; minEventsPerRequest: number };
}

export interface IngestBudgetOptions {
  /** The producer connection, a single Redis or a Cluster (each bucket is one key). */
  redis: RedisConnection;
  /** KEY_PREFIX: buckets are `<prefix>:ingest-budget:{<store>}` keys. */
  keyPrefix: string;
  /** INGEST_BUDGET_EVENTS_PER_SECOND: the rate of a store whose tenant record sets none; 0: such stores are not limited. */
  eventsPerSecond: number;
  /** INGEST_BUDGET_BURST_SECONDS: the bucket holds this many seconds of the rate. */
  burstSeconds: number;
  /** INGEST_MIN_EVENTS_PER_REQUEST: the fewest events a request is charged, however few it has. */
  minEventsPerRequest: number;
  now?: () => number;
}

// Every read and check before the first write (docs/DESIGN.md); HSET and PEXPIRE cannot fail once HMGET has read
// the key as a hash, and the shebang makes Redis refuse the whole script under noeviction OOM. A cost larger than the
// bucket needs a full bucket and leaves `tokens` negative (debt); the wait is the time until the tokens needed are
// there, debt included. The key lives until the bucket would be full again: it then starts full, as a new one does,
// and no debt is forgotten.
const TAKE = `#!lua
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then
  tokens = cap
  at = now
end
if now > at then
  tokens = tokens + (now - at) * rate / 1000
  at = now
end
if tokens > cap then tokens = cap end
local need = cost
if need > cap then need = cap end
local wait = 0
if tokens >= need then
  tokens = tokens - cost
else
  wait = math.ceil((need - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%d', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) * 1000 / rate) + 1000)
return wait
`;

const COMMAND = 'tallyIngestBudgetTake';

type WithTake = { [COMMAND]: (key: string, now: number, rate: number, cap: number, cost: number) => Promise<number> };

export function createIngestBudget(opts: IngestBudgetOptions): IngestBudget {
  const now = opts.now ?? Date.now;
  const budgetKey = redisKeys(opts.keyPrefix).ingestBudget;
  if (!(COMMAND in opts.redis)) opts.redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: TAKE });
  const limitOf = (ownRate?: number) => {
    const eventsPerSecond = ownRate ?? opts.eventsPerSecond;
    return {
      eventsPerSecond,
      burst: Math.max(1, Math.round(eventsPerSecond * opts.burstSeconds)),
      minEventsPerRequest: opts.minEventsPerRequest,
    };
  };
  return {
    limitOf,
    async take(store, events, ownRate) {
      const { eventsPerSecond, burst } = limitOf(ownRate);
      if (eventsPerSecond <= 0) return 0;
      const cost = Math.max(events, opts.minEventsPerRequest);
      return Number(await (opts.redis as unknown as WithTake)[COMMAND](budgetKey(store), now(), eventsPerSecond, burst, cost));
    },
  };
}
