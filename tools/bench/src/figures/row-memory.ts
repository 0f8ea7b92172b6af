import { BucketStore } from '@tally/buckets';
import { parsePk, redisKeys } from '@tally/key-layout';
import { clientSender } from '@tally/loadgen';
import { compileRules, defaultRules, rollup, type DistinctAdds, type NormalizedEvent } from '@tally/schema';
import { startRedis } from '@tally/testing';
import { Redis } from 'ioredis';
import { deleteKeys, fallOf } from '../redis-benchmark';
import { sum } from '../stats';
import { flushStore, prng } from '../workload';

const DAY_MS = 86_400_000;

/**
 * A store's day of docs/SCALING.md's workload (tools/cost DEFAULT_WORKLOAD: 5,000 events/s, 20M visitors a month
 * and 100 products viewed a day over 10,000 stores; as many pages as products, as its rankings assume).
 */
const DAY = { events: 43_200, products: 100, pages: 100, visitors: 67, eventsPerBatch: 100 };

export const ROW_KINDS = ['product', 'page', 'visitor', 'store'] as const;
type RowKind = (typeof ROW_KINDS)[number];

/** Redis bytes per open row of one kind, as the fall of used_memory when its parts are deleted, and its outbox entries. */
interface KindMemory {
  rows: number;
  /** Outbox entries (hash fields) per row. */
  entries: number;
  /** Counts per row since its last flush: its counters' updates (an event and a counter each), which bound its entries. */
  counts: number;
  /** The outbox hash (`o:<pk>`). */
  outbox: number;
  /** The unique-visitor sketches (`us:`, `uh:`) and the set of their unwritten days (`ur:`). */
  sketches: number;
  /** Its members in the store's `dirty` and `due` zsets and its field in `dl`. */
  bookkeeping: number;
  total: number;
}

/** The time of event `k` of a store's day: at even intervals from `dayStart`. */
const timeOf = (dayStart: number, k: number) => dayStart + Math.floor(((k + 0.5) * DAY_MS) / DAY.events);

/**
 * Event `k` of a store's day: 60% product views, 30% page views, 5% orders, 5% order lines, at even intervals over
 * the day, products and pages uniform; the day's visitors one after another (each a session of events/visitors
 * events), so a visitor's row is open through its session and its idle flush.
 */
function eventOf(dayStart: number, k: number, rnd: () => number): NormalizedEvent {
  const ts = timeOf(dayStart, k);
  const visitor = `V${Math.floor((k * DAY.visitors) / DAY.events)}`;
  const r = rnd();
  const product = `P${Math.floor(rnd() * DAY.products)}`;
  if (r < 0.6) return { type: 'view', ts, dims: { product, visitor } };
  if (r < 0.9) return { type: 'page_view', ts, dims: { page: `/p/${Math.floor(rnd() * DAY.pages)}`, visitor } };
  if (r < 0.95) return { type: 'order', ts, value: '19.99', dims: { visitor } };
  return { type: 'order_item', ts, value: '9.99', dims: { product, visitor } };
}

/**
 * Redis 7's per-command latency histograms (`latency-tracking`) take tens of KB each at a command's first call: off,
 * so that a drop's first ZREM or DEL is not counted against it.
 */
const UNTRACKED = { args: ['--latency-tracking', 'no'] };

/**
 * Redis memory of each kind of open row at its fullest (the method is in docs/SCALING.md, "Inputs"): `stores` stores
 * each run through a DAY on the default rules and an injected clock, as the aggregator and the writer do it (buckets of
 * `bucketMs`; no DynamoDB behind the flushes), measured at midnight, after the fold of the day's last bucket and before
 * the flushes due then. Per kind, the outboxes, then the sketches, then the zset members are deleted.
 */
export async function measureRowMemory(opts: { stores: number; bucketMs: number }) {
  const server = await startRedis(UNTRACKED);
  const redis = new Redis(server.url, { maxRetriesPerRequest: null });
  const rules = compileRules(defaultRules);
  const buckets = new BucketStore({ redis, rules, prefix: 't' });
  try {
    const stores = Array.from({ length: opts.stores }, (_, i) => `STORE${i}`);
    const rnds = stores.map((_, i) => prng(1000 + i));
    // A UTC midnight in the past: the daily flushes fall due at midnight UTC.
    const dayStart = Math.floor(Date.now() / DAY_MS) * DAY_MS - 2 * DAY_MS;
    const dayEnd = dayStart + DAY_MS;
    let next = 0;
    /** Each open row's counts since its last flush. */
    const counts = new Map<string, number>();
    const applyBatch = async (store: string, rnd: () => number, from: number, to: number) => {
      const events = Array.from({ length: to - from }, (_, i) => eventOf(dayStart, from + i, rnd));
      for (const e of events)
        for (const [pk, fields] of rollup(rules, store, 'UTC', [e])) counts.set(pk, (counts.get(pk) ?? 0) + fields.size);
      const distinct: DistinctAdds = new Map();
      const deltas = rollup(rules, store, 'UTC', events, new Map(), distinct);
      const now = events[events.length - 1]!.ts;
      const r = await buckets.apply(store, `b${from}`, deltas, { now, dedupeTtlSeconds: 86_400 });
      await buckets.registerStore(store, r.seq, now);
      await buckets.sketches.add(store, distinct, now);
    };
    for (let end = dayStart + opts.bucketMs; end <= dayEnd; end += opts.bucketMs) {
      const from = next;
      while (next < DAY.events && timeOf(dayStart, next) < end) next++;
      await Promise.all(
        stores.map(async (store, i) => {
          for (let k = from; k < next; k += DAY.eventsPerBatch)
            await applyBatch(store, rnds[i]!, k, Math.min(next, k + DAY.eventsPerBatch));
          if (end === dayEnd) {
            await buckets.seal(store, { now: end, minAgeMs: 0 });
            await buckets.foldSealed(store, { now: end });
            return;
          }
          // As the writer: the sketches acked after their write, then the outbox.
          await flushStore(
            buckets,
            store,
            () => end,
            end,
            async (pk) => {
              const [live] = await buckets.sketches.read(store, [pk]);
              await buckets.sketches.ack(store, pk, live ?? []);
              counts.delete(pk);
            },
          );
        }),
      );
    }
    const kinds = {} as Record<RowKind, KindMemory>;
    let [allEntries, allOutbox] = [0, 0];
    for (const kind of ROW_KINDS) {
      const rows: Array<{ store: string; pk: string }> = [];
      for (const store of stores)
        for (const pk of await redis.zrange(buckets.keys.dirty(store), 0, -1))
          if ((parsePk(pk).entity ?? 'store') === kind) rows.push({ store, pk });
      const entries = sum(await Promise.all(rows.map(({ store, pk }) => redis.hlen(buckets.keys.outbox(store, pk)))));
      const outbox = await fallOf(redis, (conn) => Promise.all(rows.map(({ store, pk }) => conn.del(buckets.keys.outbox(store, pk)))));
      const sketches = await fallOf(redis, (conn) =>
        Promise.all(
          rows.map(async ({ store, pk }) => {
            const fields = await conn.smembers(buckets.sketches.rowsKey(store, pk));
            await conn.del(buckets.sketches.rowsKey(store, pk), ...fields.flatMap((f) => buckets.sketches.sketchKeys(store, pk, f)));
          }),
        ),
      );
      const bookkeeping = await fallOf(redis, (conn) =>
        Promise.all(
          rows.map(({ store, pk }) =>
            conn
              .multi()
              .zrem(buckets.keys.dirty(store), pk)
              .zrem(buckets.keys.due(store), pk)
              .hdel(buckets.keys.dueLater(store), pk)
              .exec(),
          ),
        ),
      );
      const per = (bytes: number) => (rows.length > 0 ? bytes / rows.length : 0);
      [allEntries, allOutbox] = [allEntries + entries, allOutbox + outbox];
      kinds[kind] = {
        rows: rows.length,
        entries: per(entries),
        counts: per(sum(rows.map(({ pk }) => counts.get(pk) ?? 0))),
        outbox: per(outbox),
        sketches: per(sketches),
        bookkeeping: per(bookkeeping),
        total: per(outbox + sketches + bookkeeping),
      };
    }
    return { kinds, bytesPerOutboxEntry: allOutbox / allEntries };
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

/**
 * Redis bytes per idempotency record: `n` batches enqueued through libs/client, each with an Idempotency-Key of
 * tools/loadgen's form (`lg<seed>-<store>-<seq>`), their records then deleted (the fall of used_memory over `n`).
 */
export async function measureIdempotencyRecords(n: number) {
  const server = await startRedis(UNTRACKED);
  const redis = new Redis(server.url);
  const sender = clientSender({ connection: server.url, backpressure: false });
  try {
    for (let seq = 0; seq < n; seq++) {
      const events = [{ type: 'view', ts: Date.now(), dims: { product: 'P1', visitor: 'V1' } }];
      const r = await sender.send({ seq, store: 'STORE1', idempotencyKey: `lg1-STORE1-${seq}`, events, badIndexes: [], badKinds: [] });
      if (r.kind !== 'accepted') throw new Error(`batch ${seq} not accepted: ${JSON.stringify(r)}`);
    }
    // The records in the stores' slots (a new installation's upgrade window keeps a copy on the first events shard too).
    const keys = await redis.keys(redisKeys().idempotency('STORE1', '*'));
    if (keys.length !== n) throw new Error(`${keys.length} idempotency records, not ${n}`);
    const ttlSeconds = await redis.ttl(keys[0]!);
    const bytes = await fallOf(redis, (conn) => deleteKeys(conn, keys));
    return { records: n, bytesPerRecord: bytes / n, ttlSeconds };
  } finally {
    await sender.close();
    redis.disconnect();
    await server.stop();
  }
}
