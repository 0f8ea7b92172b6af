import type { BucketStore, OutboxRead } from '@tally/buckets';
import { mulberry32, zipf as zipfRank, type Rng } from '@tally/loadgen';
import { defaultRules, type NormalizedEvent, type RulesInput } from '@tally/schema';

/** The default rules with `patch` (a flush policy, `rank: false`, …) on every entity. */
export const eachEntity = (patch: Partial<RulesInput['entities'][string]>) =>
  editedRules((r) => Object.values(r.entities).forEach((e) => Object.assign(e, patch)));

/** A copy of the default rules as `edit` leaves it (on a looser shape, so that it can delete what RulesInput requires). */
export function editedRules(edit: (r: LooseRules) => void): RulesInput {
  const r = structuredClone(defaultRules) as unknown as LooseRules;
  edit(r);
  return r as unknown as RulesInput;
}
type LooseRules = {
  metrics: Record<string, unknown>;
  entities: Record<string, Record<string, unknown>>;
  dimensions?: unknown;
  events: Record<string, { counters: Array<{ entity: string }> }>;
};

/** Deterministic PRNG (mulberry32), the load generator's. */
export const prng = mulberry32;

/** A Zipf(s) sampler over 1..n (tools/loadgen's, drawing from `rnd`). */
export function zipf(n: number, s: number, rnd: () => number): () => number {
  const [draw, rng] = [zipfRank(n, s), { next: rnd } as Rng];
  return () => draw(rng) + 1;
}

/** A batch of mixed events (90% product views, 7% page views, 3% orders) stamped within the last hour. */
export function makeBatch(rnd: () => number, products: () => number, visitors: () => number, n: number, now: number): NormalizedEvent[] {
  const out: NormalizedEvent[] = [];
  for (let i = 0; i < n; i++) {
    const r = rnd();
    const ts = now - Math.floor(rnd() * 3_600_000);
    if (r < 0.9) out.push({ type: 'view', ts, dims: { product: `P${products()}`, visitor: `V${visitors()}` } });
    else if (r < 0.97) out.push({ type: 'page_view', ts, dims: { visitor: `V${visitors()}` } });
    else out.push({ type: 'order', ts, value: (Math.floor(rnd() * 20000) / 100).toFixed(2), dims: { visitor: `V${visitors()}` } });
  }
  return out;
}

export type DayEvent = { store: string; event: NormalizedEvent };

/**
 * A simulated day of e-commerce traffic: Zipf-distributed stores, products and visitors; visitor sessions
 * (a visitor views a few products over some minutes, sometimes orders), more traffic in the daytime.
 * Events are sorted by time.
 */
export function simulatedDay(opts: {
  seed: number;
  sessions: number;
  stores: number;
  products: number;
  visitors: number;
  dayStart: number;
}): DayEvent[] {
  const rnd = prng(opts.seed);
  const store = zipf(opts.stores, 1.0, rnd);
  const product = zipf(opts.products, 1.05, rnd);
  const visitor = zipf(opts.visitors, 0.8, rnd);
  const out: DayEvent[] = [];
  for (let s = 0; s < opts.sessions; s++) {
    // Daytime-weighted start: two uniforms averaged peak around midday.
    const start = opts.dayStart + Math.floor(((rnd() + rnd()) / 2) * 86_000_000);
    const st = `STORE${store()}`;
    const v = `V${visitor()}`;
    const views = 1 + Math.floor(rnd() * 8);
    let t = start;
    for (let i = 0; i < views; i++) {
      t += Math.floor(rnd() * 120_000);
      out.push({ store: st, event: { type: 'view', ts: t, dims: { product: `P${product()}`, visitor: v } } });
    }
    if (rnd() < 0.08) {
      t += Math.floor(rnd() * 300_000);
      out.push({ store: st, event: { type: 'order', ts: t, value: (Math.floor(rnd() * 20000) / 100).toFixed(2), dims: { visitor: v } } });
    }
  }
  return out.sort((a, b) => a.event.ts - b.event.ts);
}

/**
 * Seals and folds `store`'s buckets, then passes each row due by `dueAt` to `write` (if given) with its unwritten counts
 * and acks them, as the dynamo-writer does.
 */
export async function flushStore(
  buckets: BucketStore,
  store: string,
  now: () => number,
  dueAt: number,
  write?: (pk: string, entries: OutboxRead['entries']) => Promise<unknown>,
): Promise<void> {
  await buckets.seal(store, { now: now(), minAgeMs: 0 });
  await buckets.foldSealed(store, { now: now() });
  for (const { pk } of await buckets.dueRows(store, dueAt)) {
    const { entries } = await buckets.readOutbox(store, pk);
    if (entries.length === 0) continue;
    await write?.(pk, entries);
    const fields = entries.map((e) => e.field);
    await buckets.ackOutbox(store, pk, fields, now());
  }
}
