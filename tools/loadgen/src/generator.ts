import { localDate } from '@tally/key-layout';
import { MAX_VALUE, type EventInput } from '@tally/schema';
import { createRng, hashSeed, zipf, type Rng } from './rng';

/** A store of the generated shop traffic and its IANA time zone (the tenant's, so days bin the same way). */
export interface StoreSpec {
  id: string;
  timeZone: string;
  /** Relative share of the traffic; default 1. */
  weight?: number;
}

/** Three stores in zones that bin days differently: +05:45, -07:00/-08:00 (with DST) and UTC. */
export const DEMO_STORES: readonly StoreSpec[] = [
  { id: 'KTM1', timeZone: 'Asia/Kathmandu', weight: 1 },
  { id: 'LAX1', timeZone: 'America/Los_Angeles', weight: 2 },
  { id: 'UTC1', timeZone: 'UTC', weight: 1 },
];

export interface LoadOptions {
  seed: number;
  stores: readonly StoreSpec[];
  /** Distinct products per store (Zipf-distributed popularity). Default 200. */
  products?: number;
  /** Distinct visitors per store (Zipf-distributed activity). Default 1000. */
  visitors?: number;
  /** The time events happen at: a fixed instant (deterministic output) or a clock read per session. Default: the time of the first call. */
  now?: number | (() => number);
  /** Events per batch: a fixed number or [min, max]. Default [20, 200]. */
  batchSize?: number | readonly [number, number];
  /** Stop after this many good events (the last batch may end a little past it). Default: never. */
  maxEvents?: number;
  /** Share of sessions stamped in the past (late events). Default 0.1. */
  lateShare?: number;
  /** Share of late sessions placed in the previous month of the store's time zone. Default 0.4. */
  previousMonthShare?: number;
  /** Share of batches that also carry invalid events the edge must refuse. Default 0. */
  badShare?: number;
  /** Share of orders (and their lines) valued at the documented maximum (number or string) or zero: sums pass 64 bits. Default 0. */
  extremeShare?: number;
}

/** The invalid events the generator mixes in, by kind (`ts`: a minute ago); each must be refused at the edge with a 4xx naming the field. */
const BAD_EVENTS = {
  'unknown-type': (ts) => ({ type: 'click', ts, dims: { product: 'P1' } }),
  'bad-dim-value': (ts) => ({ type: 'view', ts, dims: { product: 'P#1', visitor: 'V1' } }),
  'unknown-dim': (ts) => ({ type: 'view', ts, dims: { product: 'P1', color: 'red' } }),
  'negative-value': (ts, r) => ({ type: 'order', ts, dims: { visitor: `V${r.int(10)}` }, value: -5 }),
  'too-many-decimals': (ts) => ({ type: 'order', ts, dims: { visitor: 'V1' }, value: 1.234 }),
  'missing-value': (ts) => ({ type: 'order', ts, dims: { visitor: 'V1' } }),
  'pipe-in-dim': (ts) => ({ type: 'view', ts, dims: { product: 'P|1' } }),
  // One cent above the maximum value, as a decimal string and as a number (which JSON keeps exactly as written).
  'over-maximum': (ts, r) => ({ type: 'order', ts, dims: { visitor: 'V1' }, value: r.chance(0.5) ? `${MAX_VALUE}.01` : MAX_VALUE + 0.01 }),
  // 30 February of the year: a calendar date that does not exist, never rolled into 2 March.
  'nonexistent-date': (ts) => ({ type: 'view', ts: `${ts.slice(0, 4)}-02-30T12:00:00Z`, dims: { product: 'P1' } }),
} satisfies Record<string, (ts: string, r: Rng) => EventInput>;
export type BadEventKind = keyof typeof BAD_EVENTS;
export const BAD_EVENT_KINDS = Object.keys(BAD_EVENTS) as BadEventKind[];

export interface LoadBatch {
  seq: number;
  store: string;
  /** Deterministic per seed, store and seq: sending the batch again with it must count it once. */
  idempotencyKey: string;
  events: EventInput[];
  /** Indexes (into `events`) of the invalid events, and what each is. */
  badIndexes: number[];
  badKinds: BadEventKind[];
}

/** Zipf exponent of popularity; days back late sessions reach (under the collector's LATENESS_HORIZON_DAYS); shares of
 * sessions that end in an order, and of anonymous ones (without a visitor). */
const [ZIPF_S, LATE_DAYS, ORDER_SHARE, ANONYMOUS_SHARE] = [1.1, 33, 0.3, 0.05];
const [MINUTE, HOUR, DAY] = [60_000, 3_600_000, 86_400_000];

/** The price of a product in cents, fixed per product id (1.00 to 99.99). */
export const priceCents = (product: string) => 100 + (hashSeed(product) % 9_900);

/** Mostly a JSON number (1999 -> 19.99), else a decimal string that keeps trailing zeros (1990 -> "19.90"), as some clients send. */
const priceValue = (r: Rng, cents: number) =>
  r.chance(0.8) ? cents / 100 : `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`;

/**
 * Deterministic shop traffic in batches of one store each: visitors (Zipf) in sessions that view products (Zipf), some
 * pages, maybe an order with its lines; some late, some invalid (`badShare`). Same options and seed, same batches.
 */
export function* generateLoad(opts: LoadOptions): Generator<LoadBatch> {
  if (opts.stores.length === 0) throw new RangeError('generateLoad: give at least one store');
  const { products = 200, visitors = 1_000, lateShare = 0.1, previousMonthShare = 0.4, badShare = 0, extremeShare = 0 } = opts;
  const fixed = opts.now ?? Date.now();
  const clock = typeof fixed === 'function' ? fixed : () => fixed;
  const [minBatch, maxBatch] = typeof opts.batchSize === 'number' ? [opts.batchSize, opts.batchSize] : (opts.batchSize ?? [20, 200]);

  const rng = createRng(opts.seed);
  const batchRng = rng.fork('batches');
  const badRng = rng.fork('bad');
  // Its own stream, consulted only with extremeShare > 0, so other options keep their batches for a seed.
  const extremeRng = rng.fork('extreme');
  const extreme = (): number | string | undefined =>
    extremeShare > 0 && extremeRng.chance(extremeShare) ? extremeRng.pick([MAX_VALUE, String(MAX_VALUE), 0, '0.00']) : undefined;
  const productOf = zipf(products, ZIPF_S);
  const visitorOf = zipf(visitors, ZIPF_S);
  const weights = opts.stores.map((st) => st.weight ?? 1);
  const totalWeight = weights.reduce((a, b) => a + b, 0);

  // One session stream per store, each with its own generator so stores do not perturb each other.
  const streams = opts.stores.map((store) => sessionStream(store, rng.fork(`store:${store.id}`)));

  function* sessionStream(store: StoreSpec, r: Rng): Generator<EventInput> {
    for (;;) {
      const now = clock();
      const visitor = `V${visitorOf(r)}`;
      const anonymous = r.chance(ANONYMOUS_SHARE);
      let t = sessionStart(store, r, now);
      const step = () => {
        t = Math.min(now, t + r.between(1, 20) * 1_000);
        // Half ISO-8601 strings, half epoch milliseconds: both are part of the contract.
        return r.chance(0.5) ? new Date(t).toISOString() : t;
      };
      const viewed: string[] = [];
      const views = r.between(1, 6);
      for (let i = 0; i < views; i++) {
        const product = `P${productOf(r)}`;
        viewed.push(product);
        const ev: EventInput = { type: 'view', ts: step(), dims: anonymous ? { product } : { product, visitor } };
        if (r.chance(0.1)) ev.id = `e${r.int(1e9)}`;
        yield ev;
        if (!r.chance(0.3)) continue;
        const ts = step();
        const page = `/pages/${r.int(20)}`;
        yield { type: 'page_view', ts, dims: anonymous ? { page } : { visitor, page } };
      }
      if (anonymous || !r.chance(ORDER_SHARE)) continue;
      const lines = [...new Set(viewed)].slice(0, r.between(1, 3));
      let total = 0;
      for (const product of lines) {
        const cents = priceCents(product);
        total += cents;
        const value = priceValue(r, cents);
        yield { type: 'order_item', ts: step(), dims: { product, visitor }, value: extreme() ?? value };
      }
      const value = priceValue(r, total);
      yield { type: 'order', ts: step(), dims: { visitor }, value: extreme() ?? value };
    }
  }

  function sessionStart(store: StoreSpec, r: Rng, now: number): number {
    if (!r.chance(lateShare)) return now - r.between(30, 120) * 1_000;
    const late = () => now - HOUR - r.int(LATE_DAYS * DAY - 2 * HOUR);
    if (r.chance(previousMonthShare)) {
      // In the previous month of the store's zone: it ends at most 31 days back, within the lateness window.
      const thisMonth = localDate(now, store.timeZone).month;
      for (let i = 0; i < 64; i++) {
        const ts = late();
        if (localDate(ts, store.timeZone).month !== thisMonth) return ts;
      }
    }
    return late();
  }

  let good = 0;
  for (let seq = 0; opts.maxEvents === undefined || good < opts.maxEvents; seq++) {
    let u = batchRng.next() * totalWeight;
    let storeIndex = 0;
    while (storeIndex < weights.length - 1 && u >= weights[storeIndex]!) u -= weights[storeIndex++]!;
    const store = opts.stores[storeIndex]!;
    const stream = streams[storeIndex]!;
    const events = Array.from({ length: batchRng.between(minBatch, maxBatch) }, () => stream.next().value as EventInput);
    good += events.length;
    const badKindOf = new Map<EventInput, BadEventKind>();
    if (badShare > 0 && badRng.chance(badShare)) {
      for (let n = badRng.between(1, 3); n > 0; n--) {
        const kind = badRng.pick(BAD_EVENT_KINDS);
        const at = badRng.int(events.length + 1);
        const bad = BAD_EVENTS[kind](new Date(clock() - MINUTE).toISOString(), badRng);
        events.splice(at, 0, bad);
        badKindOf.set(bad, kind);
      }
    }
    const badIndexes = events.flatMap((e, i) => (badKindOf.has(e) ? [i] : []));
    const badKinds = events.flatMap((e) => badKindOf.get(e) ?? []);
    yield { seq, store: store.id, idempotencyKey: `lg${opts.seed}-${store.id}-${seq}`, events, badIndexes, badKinds };
  }
}

/** The events of a batch the edge accepts: all but the invalid ones. */
export const goodEvents = (batch: LoadBatch) => batch.events.filter((_, i) => !batch.badIndexes.includes(i));
