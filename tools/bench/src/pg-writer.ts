// The PostgreSQL peer's writer process, started by the postgres-peer figure (whose markdown has the method) with one
// JSON line of Options as argv[2]: makes its tables, reads batches as NDJSON lines on stdin ({ id, store, timeZone,
// events }), applies each in one statement and one transaction over a pool of connections, then checks its tables
// against everything it applied and prints one JSON line (PeerRun).
import { createInterface } from 'node:readline';
import { compileRules, rollup, validateEvents, type DistinctAdds, type RowDeltas, type RulesInput } from '@tally/schema';
import pg from 'pg';
import { cpuMeter } from './proc';

interface Options {
  connectionString: string;
  table: string;
  synchronousCommit: 'on' | 'off';
  concurrency: number;
  /** The rules it counts by. */
  rules: RulesInput;
  /** Also keep the rules' distinct counts (unique visitors) exactly: each (pk, field, member) in a members table. */
  distinct?: boolean;
}

const opts = JSON.parse(process.argv[2]!) as Options;
const rules = compileRules(opts.rules);
const counters = `${opts.table}_counters`;
const batches = `${opts.table}_batches`;
const DEDUPE = `b AS (INSERT INTO ${batches} (id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id)`;
const UPSERT_COUNTERS = `INSERT INTO ${counters} (pk, field, value)
SELECT u.pk, u.field, u.v FROM unnest($2::text[], $3::text[], $4::numeric[]) AS u(pk, field, v) WHERE EXISTS (SELECT 1 FROM b)
ON CONFLICT (pk, field) DO UPDATE SET value = ${counters}.value + EXCLUDED.value`;
const APPLY_SQL = `WITH ${DEDUPE} ${UPSERT_COUNTERS}`;
// With distinct counts: the same, and the batch's (pk, field, member) triples into the members table, in one statement.
const members = `${opts.table}_members`;
const APPLY_DISTINCT_SQL = `WITH ${DEDUPE}, c AS (${UPSERT_COUNTERS}),
m AS (INSERT INTO ${members} (pk, field, member)
SELECT u.pk, u.field, u.m FROM unnest($5::text[], $6::text[], $7::int8[]) AS u(pk, field, m) WHERE EXISTS (SELECT 1 FROM b)
ON CONFLICT DO NOTHING)
SELECT id FROM b`;

const pool = new pg.Pool({
  connectionString: opts.connectionString,
  max: opts.concurrency,
  // Connections stay open for the whole run (no churn), each with the durability setting under test.
  idleTimeoutMillis: 0,
  options: `-c synchronous_commit=${opts.synchronousCommit}`,
});

// Open every connection up front and learn its server process, plus the server's WAL writer, checkpointer and
// background writer (shared with anything else the server runs); make the tables.
const clients = await Promise.all(Array.from({ length: opts.concurrency }, () => pool.connect()));
const tables = [
  `${counters} (pk text NOT NULL, field text NOT NULL, value numeric(38, 0) NOT NULL, PRIMARY KEY (pk, field))`,
  `${batches} (id text PRIMARY KEY)`,
  ...(opts.distinct ? [`${members} (pk text NOT NULL, field text NOT NULL, member int8 NOT NULL, PRIMARY KEY (pk, field, member))`] : []),
];
for (const t of tables) await clients[0]!.query(`CREATE TABLE ${t}`);
const serverPids: number[] = [];
for (const c of clients) serverPids.push((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
const aux = await clients[0]!.query<{ pid: number }>(
  "SELECT pid FROM pg_stat_activity WHERE backend_type IN ('walwriter', 'checkpointer', 'background writer')",
);
serverPids.push(...aux.rows.map((r) => r.pid));
for (const c of clients) c.release();
process.stdout.write('ready\n');

const expected = new Map<string, bigint>();
/** With distinct counts: each (pk, field)'s members (as int8 text). */
const expectedMembers = new Map<string, Set<string>>();
const latencies: number[] = [];
let [events, applied, duplicates] = [0, 0, 0];
let meter: ReturnType<typeof cpuMeter<'writer' | 'server'>> | undefined;
let t0 = 0;

async function apply(line: string, receivedAt: number): Promise<void> {
  const b = JSON.parse(line) as { id: string; store: string; timeZone: string; events: unknown[] };
  const v = validateEvents(rules, b.events, { now: Date.now(), clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 });
  const adds: DistinctAdds | undefined = opts.distinct ? new Map() : undefined;
  const deltas: RowDeltas = rollup(rules, b.store, b.timeZone, v.events, new Map(), adds);
  // Sorted by key, so concurrent batches lock rows in one order (no deadlocks).
  const cells: Array<[string, string, string]> = [];
  for (const [pk, fields] of deltas) for (const [field, d] of fields) cells.push([pk, field, d.toString()]);
  cells.sort(byKey);
  const values: unknown[] = [b.id, ...columns(cells)];
  const triples: Array<[string, string, string]> = [];
  if (adds) {
    // A member is the first 8 bytes of the value's SHA-256 (latin1), kept as an int8.
    for (const [pk, fields] of adds)
      for (const [field, set] of fields)
        for (const m of set) triples.push([pk, field, Buffer.from(m, 'latin1').readBigInt64BE().toString()]);
    values.push(...columns(triples.sort(byKey)));
  }
  const r = await pool.query({ name: 'apply', text: adds ? APPLY_DISTINCT_SQL : APPLY_SQL, values });
  latencies.push(performance.now() - receivedAt);
  events += v.events.length;
  if (r.rowCount === 0 && cells.length > 0) {
    duplicates++;
    return;
  }
  applied++;
  for (const [pk, field, d] of cells) expected.set(`${pk}\u0000${field}`, (expected.get(`${pk}\u0000${field}`) ?? 0n) + BigInt(d));
  for (const [pk, field, m] of triples)
    expectedMembers.set(`${pk}\u0000${field}`, (expectedMembers.get(`${pk}\u0000${field}`) ?? new Set()).add(m));
}

/** The 3 columns of rows of 3 (unnest's arrays). */
const columns = (rows: ReadonlyArray<readonly string[]>) => [0, 1, 2].map((i) => rows.map((r) => r[i]));

function byKey(x: readonly string[], y: readonly string[]): number {
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  return 0;
}

const inFlight = new Set<Promise<void>>();
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line === '') continue;
  if (meter === undefined) {
    meter = cpuMeter({ writer: process.pid, server: serverPids });
    t0 = performance.now();
  }
  const p = apply(line, performance.now()).finally(() => inFlight.delete(p));
  inFlight.add(p);
  if (inFlight.size >= opts.concurrency) await Promise.race(inFlight);
}
await Promise.all(inFlight);
const seconds = (performance.now() - t0) / 1000;
const cpu = meter?.stop();

// The table against the sums of every batch applied.
const rows = await pool.query<{ pk: string; field: string; value: string }>(`SELECT pk, field, value::text AS value FROM ${counters}`);
const inTable = new Map(rows.rows.map((r) => [`${r.pk}\u0000${r.field}`, BigInt(r.value)]));
/** Keys whose values differ between `a` and `b` (a key in only one of them too). */
const differing = <V>(a: Map<string, V>, b: Map<string, V>) =>
  [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k)).length;
let mismatches = differing(inTable, expected);
let memberRows = 0;
if (opts.distinct) {
  // Each (pk, field)'s distinct count in the table against the members of every batch applied.
  const counts = await pool.query<{ pk: string; field: string; n: string }>(
    `SELECT pk, field, count(*) AS n FROM ${members} GROUP BY pk, field`,
  );
  const inMembers = new Map(counts.rows.map((r) => [`${r.pk}\u0000${r.field}`, Number(r.n)]));
  memberRows = counts.rows.reduce((n, r) => n + Number(r.n), 0);
  mismatches += differing(inMembers, new Map([...expectedMembers].map(([k, set]) => [k, set.size])));
}
await pool.end();
latencies.sort((a, b) => a - b);
const result = {
  events,
  batches: applied,
  duplicates,
  seconds,
  clientCpuSeconds: cpu?.writer.seconds ?? 0,
  serverCpuSeconds: cpu?.server.seconds ?? 0,
  latencies,
  cells: expected.size + expectedMembers.size,
  tableRows: rows.rows.length,
  memberRows,
  mismatches,
};
/** What the writer prints at the end: its counts, CPU seconds (writer, server) and each batch's latency (ms). */
export type PeerRun = typeof result;
process.stdout.write(`${JSON.stringify(result)}\n`);
