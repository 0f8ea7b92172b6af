import { seriesResponseSchema, totalsResponseSchema, UNIQUE_VISITORS } from '@tally/contracts';
import { EXACT_THRESHOLD } from '@tally/buckets';
import { cellsOfDay, dayOfYear, formatDate, localDate, monthSk, parseDayKey, TOTAL_SK } from '@tally/key-layout';
import type { RedisConnection } from '@tally/queues';
import { rollupDistinct, type CompiledRules, type DistinctAdds } from '@tally/schema';
import { randomUUID } from 'node:crypto';
import { normalize, type StoreEvents } from './expected';
import type { Fleet } from './fleet';

/** pk -> `<sk>|<attr>` -> the members (8-byte sketch members) the cell must hold: what a run without faults writes. */
export type DistinctTable = Map<string, Map<string, Set<string>>>;

/** The members of every sketch cell (day, month, year, all time) of the accepted events, by the rules' `distinct`. */
export function expectedDistinct(
  batches: Iterable<StoreEvents>,
  rules: CompiledRules,
  zones: Readonly<Record<string, string>>,
): DistinctTable {
  const out: DistinctTable = new Map();
  const adds: DistinctAdds = new Map();
  for (const b of batches) {
    adds.clear();
    rollupDistinct(
      rules,
      b.store,
      zones[b.store] ?? 'UTC',
      b.events.map((e) => normalize(rules, e)),
      adds,
    );
    for (const [pk, fields] of adds) {
      let row = out.get(pk);
      if (!row) out.set(pk, (row = new Map()));
      for (const [field, members] of fields) {
        const bar = field.indexOf('|');
        for (const { sk, attr } of cellsOfDay(parseDayKey(field.slice(0, bar)), field.slice(bar + 1))) {
          let cell = row.get(`${sk}|${attr}`);
          if (!cell) row.set(`${sk}|${attr}`, (cell = new Set()));
          for (const m of members) cell.add(m);
        }
      }
    }
  }
  return out;
}

/**
 * What a run without faults answers for the union of some cells: their exact count when every cell holds at most
 * EXACT_THRESHOLD members (the cells are exact sets then), else the Redis HLL estimate of the union (PFADD of every
 * member into a scratch key: a HyperLogLog's registers, and so its count, depend on its members only).
 */
async function noFaultAnswer(redis: RedisConnection, cells: ReadonlyArray<Set<string> | undefined>): Promise<number> {
  const union = new Set<string>();
  for (const c of cells) for (const m of c ?? []) union.add(m);
  if (cells.every((c) => (c?.size ?? 0) <= EXACT_THRESHOLD)) return union.size;
  const key = `chaos-check:{uv}:${randomUUID()}`;
  const members = [...union].map((m) => Buffer.from(m, 'latin1'));
  for (let i = 0; i < members.length; i += 5_000) await redis.pfadd(key, ...members.slice(i, i + 5_000));
  const n = await redis.pfcount(key);
  await redis.del(key);
  return n;
}

export interface DistinctCheck {
  compared: number;
  mismatches: string[];
}

/**
 * Asks the query API for UniqueVisitors after the drain and compares each answer with what a run without faults
 * gives (noFaultAnswer): every store's day series from its first day to today, the series' union and all time,
 * and the all-time count of its products with the most visitors.
 */
export async function checkUniqueVisitors(
  fleet: Fleet,
  url: string,
  expected: DistinctTable,
  opts: { products?: number; now?: number } = {},
): Promise<DistinctCheck> {
  const out: DistinctCheck = { compared: 0, mismatches: [] };
  const rules = fleet.rules;
  const storeMetric = rules
    .distinctOf(Object.entries(rules.rules.entities).find(([, e]) => e.key.length === 0)?.[0] ?? 'store')
    .find((d) => d.metric === UNIQUE_VISITORS);
  if (!storeMetric) return out;
  const code = storeMetric.attrMetric;
  const get = async (store: string, path: string): Promise<unknown> => {
    for (let attempt = 0; attempt < 30; attempt++) {
      const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${fleet.keys[store]!.read}` } }).catch(() => undefined);
      if (res?.ok) return res.json();
      if (res && res.status < 500 && res.status !== 429) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    out.mismatches.push(`GET ${path} (${store}) gave no answer`);
    return undefined;
  };
  const compare = async (what: string, got: unknown, cells: ReadonlyArray<Set<string> | undefined>) => {
    out.compared++;
    const want = await noFaultAnswer(fleet.inspect, cells);
    if (got !== want) out.mismatches.push(`${what} ${UNIQUE_VISITORS}: query API ${JSON.stringify(got)}, a run without faults ${want}`);
  };
  for (const store of Object.keys(fleet.zones)) {
    const row = expected.get(store);
    const days = [...(row?.keys() ?? [])].filter((k) => k.startsWith('M') && k.includes('|D')).sort();
    const today = localDate(opts.now ?? Date.now(), fleet.zones[store]!);
    const first = days[0]
      ? (() => {
          const [sk, attr] = days[0]!.split('|') as [string, string];
          const year = Number(sk.slice(1, 5));
          return parseDayKey(`${year}-${attr.slice(1, 4)}`);
        })()
      : today;
    const s = seriesResponseSchema.safeParse(
      await get(store, `/v1/series?metrics=${UNIQUE_VISITORS}&from=${formatDate(first)}&to=${formatDate(today)}&granularity=day`),
    );
    if (s.success) {
      const cells: Array<Set<string> | undefined> = [];
      for (const p of s.data.points) {
        const [y, mo, d] = p.period.split('-').map(Number) as [number, number, number];
        const cell = row?.get(`${monthSk(y, mo)}|D${String(dayOfYear(y, mo, d)).padStart(3, '0')}.${code}`);
        cells.push(cell);
        await compare(`${store} day ${p.period}`, p.values[UNIQUE_VISITORS], [cell]);
      }
      await compare(`${store} ${formatDate(first)}..${formatDate(today)}`, s.data.totals[UNIQUE_VISITORS], cells);
    } else out.mismatches.push(`${store} day series of ${UNIQUE_VISITORS} outside the contract`);
    const all = seriesResponseSchema.safeParse(await get(store, `/v1/series?metrics=${UNIQUE_VISITORS}&range=allTime&granularity=total`));
    if (all.success) await compare(`${store} all time`, all.data.totals[UNIQUE_VISITORS], [row?.get(`${TOTAL_SK}|${code}`)]);
    const products = [...expected.entries()]
      .filter(([pk]) => pk.startsWith(`${store}#product#`))
      .map(([pk, r]) => ({ id: pk.slice(`${store}#product#`.length), cell: r.get(`${TOTAL_SK}|${code}`) }))
      .sort((a, b) => (b.cell?.size ?? 0) - (a.cell?.size ?? 0) || a.id.localeCompare(b.id))
      .slice(0, opts.products ?? 10);
    if (products.length > 0) {
      const t = totalsResponseSchema.safeParse(
        await get(store, `/v1/totals?entity=product&ids=${products.map((p) => p.id).join(',')}&metrics=${UNIQUE_VISITORS}&range=allTime`),
      );
      if (t.success) {
        for (const [i, item] of t.data.items.entries())
          await compare(`${store} product ${item.id} all time`, item.values[UNIQUE_VISITORS], [products[i]!.cell]);
      } else out.mismatches.push(`${store} product totals of ${UNIQUE_VISITORS} outside the contract`);
    }
  }
  return out;
}
