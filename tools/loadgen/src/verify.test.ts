import { createServer, type Server } from 'node:http';
import { DynamoDBClient, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { EXACT_THRESHOLD } from '@tally/buckets';
import { UNIQUE_VISITORS } from '@tally/contracts';
import { addDays, dayOfYear, formatDate, localDate, monthSk, parseDate, TOTAL_SK, WATERMARK_ATTR } from '@tally/key-layout';
import { compileRules } from '@tally/schema';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectedCounts, expectedDistinct, type CounterTable, type DistinctTable, type StoreEvents } from './expected';
import { everyBucketRules, type Fleet } from './fleet';
import { generateLoad } from './generator';
import { checkFleetCounts, checkQueryApi, checkUniqueVisitors } from './verify';

// A query API of its own over the expected tables: exact by construction, unless a test rewrites its answers
// (`tamper`), as a query API that drops a day, a metric or an id would answer.
const rules = compileRules(everyBucketRules());
const zones = { S1: 'UTC', 'shop:2': 'Asia/Kathmandu' };
const now = Date.now();
const accepted: StoreEvents[] = [];
for (const b of generateLoad({
  seed: 5,
  stores: Object.entries(zones).map(([id, timeZone]) => ({ id, timeZone })),
  products: 30,
  // Over EXACT_THRESHOLD visitors in a day of a busy store: its day, range and all-time counts are estimates.
  visitors: 1_500,
  lateShare: 0.3,
  now,
  maxEvents: 12_000,
}))
  accepted.push({ store: b.store, events: b.events });
const counts = expectedCounts(accepted, rules, zones);
const distinct = expectedDistinct(accepted, rules, zones);

type Json = Record<string, any>;
let tamper: (path: string, answer: Json) => Json = (_p, answer) => answer;
let server: Server;
let url: string;

/** Every day (or month, yyyy-mm) from `from` to `to`. */
function periods(from: string, to: string, granularity: string): string[] {
  const out: string[] = [];
  for (let d = parseDate(from)!; formatDate(d) <= to; d = addDays(d, 1)) {
    const p = granularity === 'month' ? formatDate(d).slice(0, 7) : formatDate(d);
    if (out.at(-1) !== p) out.push(p);
  }
  return out;
}

/** The cells of a period: a day's D cell; a month's M cell. */
function cellOf(period: string, attr: string): [string, string] {
  const [y, m, d] = period.split('-').map(Number) as [number, number, number?];
  return [
    monthSk(y, m),
    d === undefined ? `M${String(m).padStart(2, '0')}.${attr}` : `D${String(dayOfYear(y, m, d)).padStart(3, '0')}.${attr}`,
  ];
}

const plain = (entity: string) => [
  ...new Set([...rules.eventTypes.values()].flatMap((t) => t.counters.filter((c) => c.entity === entity && !c.by).map((c) => c.metric))),
];
const value = (metric: string, units: bigint = 0n) =>
  rules.scaleOf(metric) === 0 ? Number(units) : `${units / 100n}.${String(units % 100n).padStart(2, '0')}`;

/** Distinct count of a union of cells and whether it is an estimate (the fake Redis below counts one more then). */
function uv(cells: Array<Set<string> | undefined>) {
  const union = new Set(cells.flatMap((c) => [...(c ?? [])]));
  const estimate = cells.some((c) => (c?.size ?? 0) > EXACT_THRESHOLD);
  return { n: estimate ? union.size + 1 : union.size, estimate };
}

function answer(store: string, path: string, q: URLSearchParams): Json {
  const base = { store, timeZone: zones[store as keyof typeof zones], asOf: new Date().toISOString(), dynamoRequests: 1 };
  const uvAsked = q.get('metrics') === UNIQUE_VISITORS;
  if (path === '/v1/totals') {
    const ids = q.get('ids')!.split(',');
    const metrics = uvAsked ? [UNIQUE_VISITORS] : plain('product');
    let anyEstimate = false;
    const items = ids.map((id) => {
      if (uvAsked) {
        const c = uv([distinct.get(`${store}#product#${id}`)?.get(TOTAL_SK)?.get('uv')]);
        anyEstimate ||= c.estimate;
        return { id, values: { [UNIQUE_VISITORS]: c.n }, ...(c.estimate ? { estimated: [UNIQUE_VISITORS] } : {}) };
      }
      const item = counts.get(`${store}#product#${id}`)?.get(TOTAL_SK);
      return { id, values: Object.fromEntries(metrics.map((m) => [m, value(m, item?.get(rules.attrMetric(m)))])) };
    });
    return {
      ...base,
      entity: 'product',
      range: 'allTime',
      from: null,
      to: null,
      metrics,
      items,
      estimated: anyEstimate ? [UNIQUE_VISITORS] : [],
    };
  }
  const entity = q.get('entity') ?? 'store';
  const pk = entity === 'store' ? store : `${store}#${entity.replace(':', '#')}`;
  const granularity = q.get('granularity')!;
  const allTime = q.get('range') === 'allTime';
  const [from, to] = allTime ? [null, null] : [q.get('from')!, q.get('to')!];
  const range = { range: allTime ? 'allTime' : null, from, to, entity, granularity };
  if (uvAsked) {
    const row = distinct.get(pk);
    const cells = allTime ? [[TOTAL_SK, 'uv']] : periods(from!, to!, 'day').map((p) => cellOf(p, 'uv'));
    const points = allTime
      ? [{ period: 'total', cells: [row?.get(TOTAL_SK)?.get('uv')] }]
      : periods(from!, to!, 'day').map((p) => ({ period: p, cells: [row?.get(cellOf(p, 'uv')[0])?.get(cellOf(p, 'uv')[1])] }));
    const all = uv(cells.map(([sk, attr]) => row?.get(sk!)?.get(attr!)));
    return {
      ...base,
      ...range,
      metrics: [UNIQUE_VISITORS],
      points: points.map((p) => {
        const c = uv(p.cells);
        return { period: p.period, values: { [UNIQUE_VISITORS]: c.n }, ...(c.estimate ? { estimated: [UNIQUE_VISITORS] } : {}) };
      }),
      totals: { [UNIQUE_VISITORS]: all.n },
      estimated: all.estimate ? [UNIQUE_VISITORS] : [],
    };
  }
  const metrics = plain(entity === 'store' ? 'store' : entity.slice(0, entity.indexOf(':')));
  const row = counts.get(pk);
  const valuesOf = (sk: string, cell: (attr: string) => string) =>
    Object.fromEntries(metrics.map((m) => [m, value(m, row?.get(sk)?.get(cell(rules.attrMetric(m))))]));
  const points = allTime
    ? [{ period: 'total', values: valuesOf(TOTAL_SK, (a) => a) }]
    : periods(from!, to!, granularity).map((p) => ({ period: p, values: valuesOf(cellOf(p, '')[0], (a) => cellOf(p, a)[1]) }));
  return { ...base, ...range, metrics, points, totals: allTime ? points[0]!.values : {}, estimated: [] };
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const u = new URL(req.url!, 'http://x');
    const store = /^Bearer read-(.+)$/.exec(req.headers.authorization ?? '')![1]!;
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify(tamper(req.url!, answer(store, u.pathname, u.searchParams))));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => server.close());

/** A Redis whose HyperLogLog "estimate" is the exact count plus one, as the fake query API answers. */
function fakeRedis() {
  const keys = new Map<string, Set<string>>();
  return {
    pfadd: async (key: string, ...members: Buffer[]) => {
      const set = keys.get(key) ?? keys.set(key, new Set()).get(key)!;
      for (const m of members) set.add(m.toString('latin1'));
      return 1;
    },
    pfcount: async (key: string) => keys.get(key)!.size + 1,
    del: async (key: string) => Number(keys.delete(key)),
  };
}

/** A DynamoDBClient whose Scan returns the counter table `table` holds, one page. */
function fakeDynamo(table: CounterTable) {
  const items: Array<Record<string, AttributeValue>> = [];
  for (const [pk, row] of table)
    for (const [sk, attrs] of row)
      items.push({
        pk: { S: pk },
        sk: { S: sk },
        [WATERMARK_ATTR]: { N: '1' },
        ...Object.fromEntries([...attrs].map(([a, v]) => [a, { N: String(v) }])),
      });
  return Object.assign(Object.create(DynamoDBClient.prototype) as DynamoDBClient, { send: async () => ({ Items: items }) });
}

const fleet = (table: CounterTable = counts) =>
  ({
    rules,
    zones,
    keys: Object.fromEntries(Object.keys(zones).map((s) => [s, { read: `read-${s}` }])),
    inspect: fakeRedis(),
    dynamo: fakeDynamo(table),
    table: 'counters',
    app: () => ({ url }),
  }) as unknown as Fleet;

const honest = (_p: string, a: Json) => a;
const today = (zone: string) => formatDate(localDate(now, zone));

describe('checkQueryApi', () => {
  it('passes an exact query API, every value of every period, metric and product compared', async () => {
    tamper = honest;
    const r = await checkQueryApi(fleet(), url, counts, { now });
    expect(r.mismatches).toEqual([]);
    expect(r.compared).toBeGreaterThan(500);
  });

  it('counts a day, a metric or a product the answer leaves out, or a period it adds, as mismatches naming them', async () => {
    const day = today('UTC');
    const cases: Array<[string, (p: string, a: Json) => Json, RegExp]> = [
      [
        'a day dropped',
        (p, a) => (p.includes('granularity=day') ? { ...a, points: a.points.filter((x: Json) => x.period !== day) } : a),
        new RegExp(`^S1 store day \\d{4}-\\d\\d-\\d\\d\\.\\.${day}: point ${day} missing from the answer$`),
      ],
      [
        'no points at all',
        (p, a) => (p.includes('from=') ? { ...a, points: [] } : a),
        /^shop:2 store month .*: point \d{4}-\d\d missing from the answer$/,
      ],
      [
        'a metric dropped',
        (_p, a) => (a.metrics.includes('Revenue') ? { ...a, metrics: a.metrics.filter((m: string) => m !== 'Revenue') } : a),
        /^S1 store day .*: metric Revenue missing from the answer$/,
      ],
      [
        'a product dropped',
        (p, a) => (p.startsWith('/v1/totals') ? { ...a, items: a.items.slice(1) } : a),
        /^S1 product totals: id P\d+ missing from the answer$/,
      ],
      [
        'a day added',
        (p, a) => (p.includes('granularity=day') ? { ...a, points: [...a.points, { period: '2099-01-01', values: {} }] } : a),
        /: point 2099-01-01 answered, not expected$/,
      ],
      [
        'a value missing from a point',
        (p, a) => (p.includes('granularity=month') ? { ...a, points: a.points.map((x: Json) => ({ ...x, values: {} })) } : a),
        /^S1 store month \d{4}-\d\d ViewCount: no value in the answer, table \d+$/,
      ],
    ];
    for (const [what, t, message] of cases) {
      tamper = t;
      const r = await checkQueryApi(fleet(), url, counts, { now });
      expect(
        r.mismatches.some((m) => message.test(m)),
        `${what}: ${JSON.stringify(r.mismatches.slice(0, 5))}`,
      ).toBe(true);
    }
    // Today of a store that has counts today has points of its own (so dropping it is a mismatch, never a pass).
    expect(counts.get('S1')?.size).toBeGreaterThan(0);
  });
});

describe('checkUniqueVisitors', () => {
  it('passes an exact query API, exact counts compared exactly and estimates with the estimate of the expected members', async () => {
    tamper = honest;
    const r = await checkUniqueVisitors(fleet(), url, distinct, { now });
    expect(r.mismatches).toEqual([]);
    expect(r.compared).toBeGreaterThan(20);
    expect(r.estimates).toBeGreaterThan(0);
    expect(r.estimates).toBeLessThan(r.compared);
  });

  it('counts a day or a product left out, an empty series, a wrong count and a wrong estimated flag as mismatches', async () => {
    const day = today('Asia/Kathmandu');
    const cases: Array<[string, (p: string, a: Json) => Json, RegExp]> = [
      [
        'a day dropped',
        (p, a) => (p.includes('granularity=day') ? { ...a, points: a.points.filter((x: Json) => x.period !== day) } : a),
        new RegExp(`^shop:2 day .*: point ${day} missing from the answer$`),
      ],
      [
        'points: []',
        (p, a) => (p.includes('granularity=day') ? { ...a, points: [] } : a),
        /^S1 day .*: point \d{4}-\d\d-\d\d missing from the answer$/,
      ],
      [
        'a product dropped',
        (p, a) => (p.startsWith('/v1/totals') ? { ...a, items: a.items.slice(0, -1) } : a),
        /^S1 product totals: id P\d+ missing from the answer$/,
      ],
      [
        'a count off by one',
        (p, a) =>
          p.includes('range=allTime&granularity=total') ? { ...a, totals: { [UNIQUE_VISITORS]: a.totals[UNIQUE_VISITORS] - 1 } } : a,
        /^S1 all time UniqueVisitors: query API \d+, a run without faults \d+$/,
      ],
      [
        'an estimate said to be exact',
        (p, a) => (p.includes('range=allTime&granularity=total') ? { ...a, estimated: [] } : a),
        /^S1 all time UniqueVisitors: the query API says exact, a run without faults estimates/,
      ],
      [
        'no metrics',
        (p, a) => (p.includes('granularity=day') ? { ...a, metrics: [] } : a),
        /^S1 day .*: metric UniqueVisitors missing from the answer$/,
      ],
    ];
    for (const [what, t, message] of cases) {
      tamper = t;
      const r = await checkUniqueVisitors(fleet(), url, distinct, { now });
      expect(
        r.mismatches.some((m) => message.test(m)),
        `${what}: ${JSON.stringify(r.mismatches.slice(0, 5))}`,
      ).toBe(true);
    }
  });
});

describe('checkFleetCounts (what loadgen --fleet and --soak check after the drain)', () => {
  it('checks the table and UniqueVisitors, saying how many were compared exactly and how many as estimates', async () => {
    tamper = honest;
    const good = await checkFleetCounts(fleet(), accepted);
    expect(good.ok).toBe(true);
    expect(good.lines[0]).toMatch(/^table has \d+ counter items, \d+ cells compared, mismatches 0$/);
    expect(good.lines.at(-1)).toMatch(
      /^UniqueVisitors through the query API \(0 sketch attributes in the table\): \d+ values compared, \d+ exact counts exactly and [1-9]\d* HyperLogLog estimates \(a sketch read holds more than 300 visitors\) with Redis's estimate of the expected visitors; mismatches 0$/,
    );

    // The table exact, one distinct count off: the run fails, naming it.
    tamper = (p, a) =>
      p.startsWith('/v1/totals') ? { ...a, items: a.items.map((x: Json) => ({ ...x, values: { [UNIQUE_VISITORS]: 0 } })) } : a;
    const bad = await checkFleetCounts(fleet(), accepted);
    expect(bad.ok).toBe(false);
    expect(bad.lines).toContainEqual(
      expect.stringMatching(/^ {2}S1 product P\d+ all time UniqueVisitors: query API 0, a run without faults \d+$/),
    );

    // And a wrong table cell still fails it.
    tamper = honest;
    const off: CounterTable = structuredClone(counts);
    const cell = [...off.get('S1')!.get(TOTAL_SK)!.keys()][0]!;
    off
      .get('S1')!
      .get(TOTAL_SK)!
      .set(cell, off.get('S1')!.get(TOTAL_SK)!.get(cell)! + 1n);
    const wrong = await checkFleetCounts(fleet(off), accepted);
    expect(wrong.ok).toBe(false);
    expect(wrong.lines[0]).toMatch(/mismatches 1$/);
  });
});

// The expected tables hold what the cases above assume: estimates somewhere, exact counts elsewhere.
it('the load of these tests has distinct counts both sides of EXACT_THRESHOLD', () => {
  const sizes = [...(distinct as DistinctTable).values()].flatMap((row) =>
    [...row.values()].flatMap((item) => [...item.values()].map((s) => s.size)),
  );
  expect(sizes.some((n) => n > EXACT_THRESHOLD)).toBe(true);
  expect(sizes.some((n) => n <= EXACT_THRESHOLD)).toBe(true);
});
