import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { userInfo } from 'node:os';
import { generateLoad, type LoadOptions } from '@tally/loadgen';
import { defaultRules } from '@tally/schema';
import { REPO_ROOT, sleep } from '@tally/testing';
import pg from 'pg';
import type { PeerRun } from '../pg-writer';
import { figure, type FigureContext } from '../figure';
import { CATALOGUE, measureLoad, PEAK_COLLECTOR, STORES, withFleet } from '../load';
import { fmt, ms, quantile } from '../stats';
import { editedRules } from '../workload';
import { probesUnderLoad } from './freshness';

/** The PostgreSQL server these machines run (trust authentication); the figure makes and drops its own database. */
const PG_URL = `postgresql://${encodeURIComponent(userInfo().username)}@127.0.0.1:5432/test`;
/** Batches in flight, for both: PostgreSQL connections in the pool, and Tally's HTTP requests (as in ingest-e2e). */
const CONCURRENCY = 8;

/** The two durabilities compared: what Redis's AOF fsync policy matches in PostgreSQL. */
const DURABILITY = [
  {
    name: 'off',
    appendfsync: 'everysec',
    synchronousCommit: 'off',
    says: 'up to about a second of acknowledged writes may be lost in a crash',
  },
  { name: 'on', appendfsync: 'always', synchronousCommit: 'on', says: 'nothing acknowledged is lost' },
] as const;

/**
 * The counters the peer keeps, and so the work both sides do: the default rules without what a counters table has no
 * equal for, the unique visitors' sketches (`distinct`) and the live rankings of top lists (`rank`).
 */
export const PEER_RULES = editedRules((r) => {
  delete r.metrics['UniqueVisitors'];
  for (const e of Object.values(r.entities)) for (const k of ['distinct', 'rank']) delete e[k];
});

const CLUSTER = { clusterMasters: 3, queueShards: 3 } as const;
/**
 * Tally's setups: as ingest-e2e runs it (services POST to the collector; one redis-server), and as the peer runs
 * (the producer validates and rolls up in its own process, `@tally/client`, no HTTP hop) with Redis on more than one
 * core as PostgreSQL's connections are: a Redis Cluster of 3 masters, one queue shard each. Both on the peer's
 * counters (PEER_RULES); the last setup again on the default rules, whose sketches and rankings the peer does not keep.
 */
const TALLY_SETUPS = [
  { name: 'HTTP, one redis-server', via: 'http', fleet: { rules: PEER_RULES }, peer: 'counters' },
  { name: '@tally/client, 3-master Redis Cluster', via: 'client', fleet: { ...CLUSTER, rules: PEER_RULES }, peer: 'counters' },
  {
    name: '@tally/client, 3-master Redis Cluster, default rules (+ unique visitors, rankings)',
    via: 'client',
    fleet: { ...CLUSTER, rules: defaultRules },
    peer: 'distinct',
  },
] as const;

/** The same traffic into PostgreSQL, given its best shot, next to Tally at equal durability (the method is in the markdown below). */
async function measurePostgresPeer(ctx: FigureContext) {
  const [windowMs, pacedMs, pacedRate, probes] = ctx.quick ? [2_000, 2_000, 2_000, 5] : [15_000, 10_000, 10_000, 100];
  const windows = { warmMs: ctx.quick ? 1_000 : 3_000, fillWaitMs: ctx.quick ? 500 : 5_000, windowMs };
  const db = `tally_bench_${process.pid}_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  const serverVersion = (await admin.query<{ v: string }>('SELECT version() AS v')).rows[0]!.v.split(' on ')[0]!;
  ctx.log(`${serverVersion}: database ${db}`);
  await admin.query(`CREATE DATABASE ${db}`);
  const url = PG_URL.replace(/\/test$/, `/${db}`);
  try {
    const rows = [];
    for (const [i, d] of DURABILITY.entries()) {
      const peak = { batchSize: 1000, durationMs: windowMs };
      const pgPeak = await runPeer(ctx, url, `peak_${d.name}`, d.synchronousCommit, { ...peak, seed: 500 + i });
      const pgDistinct = await runPeer(ctx, url, `distinct_${d.name}`, d.synchronousCommit, { ...peak, seed: 540 + i }, true);
      const paced = { batchSize: [50, 150] as [number, number], durationMs: pacedMs, rate: pacedRate };
      const pgPaced = await runPeer(ctx, url, `paced_${d.name}`, d.synchronousCommit, { ...paced, seed: 510 + i });

      const tally = [];
      for (const setup of TALLY_SETUPS) {
        ctx.log(`Tally, ${setup.name}, AOF appendfsync ${d.appendfsync}: a fleet (collector, bucket-aggregator, query-api)`);
        const fleetOptions = { ...setup.fleet, appendfsync: d.appendfsync, replicas: { 'dynamo-writer': 0 } };
        const load = { ...windows, batch: 1000, concurrency: CONCURRENCY, seed: 520 + i, via: setup.via };
        const probeOpts = { seed: 530 + i, rate: pacedRate, probes, warmMs: ctx.quick ? 500 : 2_000, tag: 'PEER', via: setup.via };
        const run = withFleet({ ...fleetOptions, appEnv: { collector: PEAK_COLLECTOR } }, async (fleet) => {
          const peak = await measureLoad(ctx, fleet, load);
          ctx.log(`  ${probes} freshness probes under ${fmt(pacedRate)} events/s`);
          return { setup, peak, freshness: (await probesUnderLoad(ctx, fleet, probeOpts)).latencies };
        });
        tally.push(await run);
      }
      rows.push({ durability: d, pgPeak, pgPaced, pgDistinct, tally });
    }
    return { rows, pacedRate, serverVersion };
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
  }
}

/**
 * Runs one writer process (which makes its tables) and feeds it batches for `durationMs` (as fast as it takes them, or
 * at `rate`): on PEER_RULES, or with `distinct` on the default rules with their distinct members too.
 */
async function runPeer(
  ctx: FigureContext,
  url: string,
  table: string,
  synchronousCommit: 'on' | 'off',
  load: { seed: number; batchSize: LoadOptions['batchSize']; durationMs: number; rate?: number },
  distinct = false,
): Promise<PeerRun> {
  const what = `${distinct ? 'PostgreSQL with a members table' : 'PostgreSQL'}, synchronous_commit = ${synchronousCommit}`;
  ctx.log(
    `${what}: ${load.rate ? `${fmt(load.rate)} events/s (freshness)` : `peak with ${load.batchSize}-event batches`}, ${load.durationMs / 1000} s`,
  );
  const rules = distinct ? defaultRules : PEER_RULES;
  const options = JSON.stringify({ connectionString: url, table, synchronousCommit, concurrency: CONCURRENCY, rules, distinct });
  const writer = spawn(process.execPath, ['--import', 'tsx', 'tools/bench/src/pg-writer.ts', options], { cwd: REPO_ROOT });
  let output = '';
  for (const out of [writer.stdout, writer.stderr]) out.on('data', (c: Buffer) => (output += c.toString()));
  const exited = once(writer, 'exit') as Promise<[number | null, string | null]>;
  const stdin = writer.stdin;
  stdin.on('error', () => undefined); // a writer that died is reported from its exit
  // Timing starts once the writer has its connections (its start-up is not the figure's).
  while (!output.startsWith('ready\n')) {
    if (writer.exitCode !== null) throw new Error(`the PostgreSQL writer exited at start:\n${output.slice(-2000)}`);
    await sleep(20);
  }
  const zones = Object.fromEntries(STORES.map((s) => [s.id, s.timeZone]));
  const t0 = performance.now();
  let sent = 0;
  for (const b of generateLoad({ seed: load.seed, stores: STORES, ...CATALOGUE, batchSize: load.batchSize, now: () => Date.now() })) {
    const elapsed = performance.now() - t0;
    if (elapsed >= load.durationMs) break;
    if (load.rate) {
      const due = (sent / load.rate) * 1000;
      if (due > elapsed) await sleep(due - elapsed);
    }
    const line = `${JSON.stringify({ id: b.idempotencyKey, store: b.store, timeZone: zones[b.store], events: b.events })}\n`;
    if (writer.exitCode !== null) break;
    if (!stdin.write(line)) await Promise.race([once(stdin, 'drain'), exited]);
    sent += b.events.length;
  }
  stdin.end();
  const [code, signal] = await exited;
  if (code !== 0) throw new Error(`the PostgreSQL writer failed (${code ?? signal}):\n${output.slice(-2000)}`);
  const run = JSON.parse(output.trim().split('\n').pop()!) as PeerRun;
  if (run.mismatches > 0)
    throw new Error(`PostgreSQL's table differs from the expected counts in ${run.mismatches} cells (of ${run.cells})`);
  if (run.duplicates > 0) throw new Error(`${run.duplicates} batches were refused as duplicates; every batch id of the run is new`);
  ctx.log(
    `  ${fmt(run.events / run.seconds)} events/s, ${peerCpuMs(run).toFixed(1)} ms CPU per 1000 events, ` +
      `p99 ${ms(quantile(run.latencies, 0.99))} ms from a batch's arrival to its commit`,
  );
  const members = distinct ? `, and ${fmt(run.memberRows)} members their distinct members,` : '';
  ctx.log(`  checked: ${fmt(run.tableRows)} (pk, field) rows equal the sums${members} of ${fmt(run.batches)} batches`);
  return run;
}

/** The writer's and the server's CPU ms per 1000 events. */
const peerCpuMs = (r: PeerRun) => ((r.clientCpuSeconds + r.serverCpuSeconds) * 1e6) / Math.max(1, r.events);

export const postgresPeerFigure = figure('postgres-peer', async (ctx) => {
  const f = await measurePostgresPeer(ctx);
  type Row = (typeof f.rows)[number];
  type Tally = Row['tally'][number];
  const pgRate = (r: Row) => r.pgPeak.events / r.pgPeak.seconds;
  /** The PostgreSQL run a Tally setup does the same work as: counters, or counters and distinct members. */
  const peerOf = (r: Row, t: Tally) => (t.setup.peer === 'distinct' ? r.pgDistinct : r.pgPeak);
  const peerName = (t: Tally) => (t.setup.peer === 'distinct' ? 'PostgreSQL with a members table' : 'PostgreSQL');
  const line = (r: Row) =>
    `sync ${r.durability.name} (AOF ${r.durability.appendfsync} / synchronous_commit=${r.durability.synchronousCommit}): ` +
    r.tally
      .map(
        (t) =>
          `Tally ${t.setup.name} ${fmt(t.peak.appliedPerSecond)} events/s, ${t.peak.cpuMs.tally.toFixed(1)} ms CPU per 1000 events, ` +
          `p99 freshness ${ms(quantile(t.freshness, 0.99))} ms`,
      )
      .join('; ') +
    `; PostgreSQL ${fmt(pgRate(r))} events/s, ${peerCpuMs(r.pgPeak).toFixed(1)} ms, p99 ${ms(quantile(r.pgPaced.latencies, 0.99))} ms` +
    `; PostgreSQL with a members table ${fmt(r.pgDistinct.events / r.pgDistinct.seconds)} events/s, ${peerCpuMs(r.pgDistinct).toFixed(1)} ms`;
  const summary = `${f.rows.map(line).join('; ')}`;
  const cpu = ({ setup, peak: { cpuMs: c } }: Tally) => {
    const parts = (['producer', 'collector', 'aggregator', 'redis'] as const).filter((p) => p !== 'producer' || setup.via === 'client');
    return `${c.tally.toFixed(1)} (${parts.map((p) => `${p} ${c[p].toFixed(1)}`).join(', ')})`;
  };
  const seen = (t: Tally) => (t.setup.via === 'http' ? '202' : 'enqueued');
  const pgCpu = (p: Row['pgPeak']) =>
    `${peerCpuMs(p).toFixed(1)} (writer ${((p.clientCpuSeconds * 1e6) / p.events).toFixed(1)}, server ${((p.serverCpuSeconds * 1e6) / p.events).toFixed(1)})`;
  const table = f.rows.flatMap((r) => {
    const d = r.durability;
    const pd = r.pgDistinct;
    return [
      ...r.tally.map(
        (t) =>
          `| Tally, ${t.setup.name}, AOF \`appendfsync ${d.appendfsync}\` | ${d.says} | **${fmt(t.peak.appliedPerSecond)}** | ${cpu(t)} | ${ms(quantile(t.freshness, 0.5))} / **${ms(quantile(t.freshness, 0.99))}** (${t.freshness.length} probes, ${seen(t)} → visible in the query API) | |`,
      ),
      `| PostgreSQL, \`synchronous_commit = ${d.synchronousCommit}\` | ${d.says} | **${fmt(pgRate(r))}** | ${pgCpu(r.pgPeak)} | ${ms(quantile(r.pgPaced.latencies, 0.5))} / **${ms(quantile(r.pgPaced.latencies, 0.99))}** (${fmt(r.pgPaced.batches)} batches, arrival → commit) | ${fmt(r.pgPeak.tableRows)} + ${fmt(r.pgPaced.tableRows)} rows equal the expected sums |`,
      `| PostgreSQL with a members table (exact unique visitors), \`synchronous_commit = ${d.synchronousCommit}\` | ${d.says} | **${fmt(pd.events / pd.seconds)}** | ${pgCpu(pd)} | | ${fmt(pd.tableRows)} rows equal the expected sums, ${fmt(pd.memberRows)} members the distinct members |`,
    ];
  });
  const markdown = [
    `${f.serverVersion} at 127.0.0.1:5432 (the machine's own`,
    'server, default configuration, shared with other users), in a database the figure creates and drops.',
    '',
    'The same tools/loadgen traffic (three stores, three time zones, Zipf products and visitors, 10% late events) into what a team would',
    "pick instead of Tally: PostgreSQL with a counters table keyed like Tally's rows (`pk text, field text, value numeric(38,0)`, primary key",
    '`(pk, field)`, `field` = `<day>|<metric>` as in a Redis bucket), given its best shot: a writer process (tools/bench/src/pg-writer.ts) validates',
    "each batch and rolls it up in the store's zone with Tally's own code and rules, then applies it with one prepared statement in one",
    'transaction — the batch id into a dedupe table (a retried batch counts once) and a multi-row `INSERT … SELECT FROM unnest(…) ON CONFLICT',
    '(pk, field) DO UPDATE SET value = value + EXCLUDED.value` of its deltas sorted by key (no deadlocks between concurrent batches) — over a',
    `pool of ${CONCURRENCY} connections opened up front. It has no HTTP hop and no queue. Peak: 1000-event batches, ${CONCURRENCY} in flight, as`,
    `fast as each takes them. Freshness: ${fmt(f.pacedRate)} events/s in batches of 50-150; PostgreSQL's is each batch's arrival at the writer to its`,
    "commit; Tally's is a probe's 202 (or its enqueue) to the first query-API answer that shows it, under the same load. CPU: PostgreSQL is the writer",
    '+ the server processes of its connections + the WAL writer, checkpointer and background writer (/proc).',
    '',
    'Equal work: both count by the same rules (`PEER_RULES` in tools/bench/src/figures/postgres-peer.ts), the default rules less the two things',
    "a counters table has no equal for, the unique visitors' sketches and the live rankings of top lists, so both write the same",
    '(pk, field) cells. The last Tally setup runs the default rules instead, and is compared with a second PostgreSQL writer that keeps the',
    "default rules' unique visitors too, exactly: each batch's distinct (pk, field, member) triples (a member is the same 8 bytes of the",
    "visitor's SHA-256 as Tally's, as an `int8`) inserted `ON CONFLICT DO NOTHING` into a members table (primary key `(pk, field, member)`) in the",
    "same statement, so a range's unique visitors is a `count(DISTINCT member)`. It keeps no rankings: PostgreSQL would sort the counters",
    'table when asked for a top list. Its check also compares each (pk, field) count of members with the distinct members of every batch applied.',
    '',
    'Tally runs two ways. **HTTP, one redis-server**: services POST to the collector, as in ingest-e2e; CPU is collector + aggregator +',
    "redis-server. **@tally/client, 3-master Redis Cluster**: the peer's own shape, the producer validating and rolling up in its process",
    "(`@tally/client`, whose backpressure stops at the collector's queue limit) with no HTTP hop, and Redis on more than one core as",
    "PostgreSQL's connections are (3 masters, AOF on each, `QUEUE_SHARDS=3`); CPU is the producer (this bench process: the load",
    "generation as well as the client, so it is counted against Tally) + aggregator + every master (+ the idle collector). Each setup's events/s",
    "is its aggregator's applied count. After each PostgreSQL run the whole table is compared with the sums of every batch applied.",
    '',
    'Equal durability: Redis AOF `appendfsync everysec` ≈ `synchronous_commit = off` (a crash may lose the last moment of acknowledged writes,',
    'PostgreSQL up to three `wal_writer_delay`s); `appendfsync always` ≈ `synchronous_commit = on` (every acknowledged write is on disk).',
    '',
    '| system | durability | **events/s** (1000-event batches) | CPU ms per 1000 events | freshness p50 / **p99** ms | check |',
    '| --- | --- | ---: | ---: | ---: | --- |',
    ...table,
    '',
    ...f.rows.map(
      (r) =>
        `- ${r.durability.name === 'off' ? 'Asynchronous' : 'Synchronous'} durability: ` +
        r.tally
          .map(
            (t) =>
              `Tally (${t.setup.name}) takes **${(t.peak.appliedPerSecond / (peerOf(r, t).events / peerOf(r, t).seconds)).toFixed(2)}×** ` +
              `${peerName(t)}'s events/s at ${(t.peak.cpuMs.tally / peerCpuMs(peerOf(r, t))).toFixed(2)}× its CPU per event`,
          )
          .join('; ') +
        '.',
    ),
  ].join('\n');
  return { summary, markdown };
});
