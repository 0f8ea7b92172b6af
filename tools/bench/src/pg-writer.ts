// The PostgreSQL peer's writer process (started by the postgres-peer figure; one JSON line of options as argv[2]):
// makes its tables (`<table>_counters`, `<table>_batches`, with `distinct` also `<table>_members`), reads batches as
// NDJSON lines on stdin ({ id, store, timeZone, events }), validates and rolls each up like Tally's collector
// (libs/schema, the given rules), and applies it to a counters table keyed like Tally's rows with one statement per
// batch: the batch id inserted into a dedupe table and a multi-row INSERT … ON CONFLICT DO UPDATE of its (pk, field)
// deltas (with `distinct`, also an INSERT … ON CONFLICT DO NOTHING of its distinct members), in one transaction, over
// a pool of connections. At the end it checks the tables against everything it applied and prints one JSON line of
// figures.
import { createInterface } from 'node:readline';
import { compileRules, rollup, validateEvents, type DistinctAdds, type RowDeltas, type RulesInput } from '@tally/schema';
import pg from 'pg';
import { cpuSeconds as cpuOf } from './proc';

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
await clients[0]!.query(
  `CREATE TABLE ${counters} (pk text NOT NULL, field text NOT NULL, value numeric(38, 0) NOT NULL, PRIMARY KEY (pk, field))`,
);
await clients[0]!.query(`CREATE TABLE ${batches} (id text PRIMARY KEY)`);
if (opts.distinct) {
  await clients[0]!.query(
    `CREATE TABLE ${members} (pk text NOT NULL, field text NOT NULL, member int8 NOT NULL, PRIMARY KEY (pk, field, member))`,
  );
}
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
let events = 0;
let applied = 0;
let duplicates = 0;
let cpu0: NodeJS.CpuUsage | undefined;
let server0 = 0;
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
  const values: unknown[] = [b.id, cells.map((c) => c[0]), cells.map((c) => c[1]), cells.map((c) => c[2])];
  const triples: Array<[string, string, string]> = [];
  if (adds) {
    // A member is the first 8 bytes of the value's SHA-256 (latin1), kept as an int8.
    for (const [pk, fields] of adds)
      for (const [field, set] of fields)
        for (const m of set) triples.push([pk, field, Buffer.from(m, 'latin1').readBigInt64BE().toString()]);
    triples.sort(byKey);
    values.push(
      triples.map((t) => t[0]),
      triples.map((t) => t[1]),
      triples.map((t) => t[2]),
    );
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
  for (const [pk, field, m] of triples) {
    const k = `${pk}\u0000${field}`;
    let set = expectedMembers.get(k);
    if (!set) expectedMembers.set(k, (set = new Set()));
    set.add(m);
  }
}

function byKey(x: readonly string[], y: readonly string[]): number {
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  return 0;
}

const inFlight = new Set<Promise<void>>();
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line === '') continue;
  if (cpu0 === undefined) {
    cpu0 = process.cpuUsage();
    server0 = serverPids.reduce((a, p) => a + cpuOf(p), 0);
    t0 = performance.now();
  }
  const p = apply(line, performance.now()).finally(() => inFlight.delete(p));
  inFlight.add(p);
  if (inFlight.size >= opts.concurrency) await Promise.race(inFlight);
}
await Promise.all(inFlight);
const seconds = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const serverSeconds = serverPids.reduce((a, p) => a + cpuOf(p), 0) - server0;

// The table against the sums of every batch applied.
const rows = await pool.query<{ pk: string; field: string; value: string }>(`SELECT pk, field, value::text AS value FROM ${counters}`);
const inTable = new Map(rows.rows.map((r) => [`${r.pk}\u0000${r.field}`, BigInt(r.value)]));
let mismatches = [...new Set([...inTable.keys(), ...expected.keys()])].filter((k) => inTable.get(k) !== expected.get(k)).length;
let memberRows = 0;
if (opts.distinct) {
  // Each (pk, field)'s distinct count in the table against the members of every batch applied.
  const counts = await pool.query<{ pk: string; field: string; n: string }>(
    `SELECT pk, field, count(*) AS n FROM ${members} GROUP BY pk, field`,
  );
  const inMembers = new Map(counts.rows.map((r) => [`${r.pk}\u0000${r.field}`, Number(r.n)]));
  memberRows = counts.rows.reduce((n, r) => n + Number(r.n), 0);
  mismatches += [...new Set([...inMembers.keys(), ...expectedMembers.keys()])].filter(
    (k) => inMembers.get(k) !== expectedMembers.get(k)?.size,
  ).length;
}
await pool.end();
latencies.sort((a, b) => a - b);
process.stdout.write(
  `${JSON.stringify({
    events,
    batches: applied,
    duplicates,
    seconds,
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
    serverCpuSeconds: serverSeconds,
    latencies,
    cells: expected.size + expectedMembers.size,
    tableRows: rows.rows.length,
    memberRows,
    mismatches,
  })}\n`,
);
