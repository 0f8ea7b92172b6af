// npx tsx tools/bench/src/micro-group-apply.ts [group]: what a group apply (several jobs of one store in one APPLY and one
// SKETCH_ADD) saves on Redis: rows, fields, ranking members and sketch members per 1,000 events of rolled-up
// 1000-event loadgen jobs (seed 1, as profile-ingest's second part), one job a call against `group` jobs in flight
// merged per store; with CALLGRIND=1, redis-server's instructions (valgrind --tool=callgrind) per 1,000 events of
// each; then the mean size of a group commit's groups in a model of the aggregator (groupModel).
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync, chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BucketStore } from '@tally/buckets';
import { generateLoad } from '@tally/loadgen';
import { compileRules, defaultRules, flattenDistinct, flattenRows, rollup, rollupDistinct, validateEvents } from '@tally/schema';
import { startRedis } from '@tally/testing';
import { Redis } from 'ioredis';
import { CATALOGUE, STORES } from './load';

const group = Number(process.argv[2] ?? 8);
const count = Number(process.env['JOBS'] ?? 48);
const rules = compileRules(defaultRules);
const now = Date.now();
const lim = { now, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };
type Job = { store: string; rows: Array<string | number>; distinct: Array<string | number>; n: number; ids: number[] };
const jobs: Job[] = [...generateLoad({ seed: 1, stores: STORES, ...CATALOGUE, batchSize: 1000, maxEvents: count * 1000, now })].map(
  (b, i) => {
    const evs = validateEvents(rules, b.events, lim).events;
    const tz = STORES.find((s) => s.id === b.store)!.timeZone;
    return {
      store: b.store,
      rows: flattenRows(rollup(rules, b.store, tz, evs)),
      distinct: flattenDistinct(rollupDistinct(rules, b.store, tz, evs)),
      n: evs.length,
      ids: [i],
    };
  },
);
const total = jobs.reduce((a, j) => a + j.n, 0);

function merge(js: Job[]): Job {
  const rows = new Map<string, Map<string, bigint>>();
  const dist = new Map<string, Map<string, Set<string>>>();
  for (const j of js) {
    for (let i = 0; i < j.rows.length;) {
      const pk = String(j.rows[i]);
      const n = Number(j.rows[i + 1]);
      let r = rows.get(pk);
      if (!r) rows.set(pk, (r = new Map()));
      for (let f = i + 2; f < i + 2 + 2 * n; f += 2) r.set(String(j.rows[f]), (r.get(String(j.rows[f])) ?? 0n) + BigInt(j.rows[f + 1]!));
      i += 2 + 2 * n;
    }
    for (let i = 0; i < j.distinct.length;) {
      const pk = String(j.distinct[i]);
      const n = Number(j.distinct[i + 1]);
      let r = dist.get(pk);
      if (!r) dist.set(pk, (r = new Map()));
      for (let f = i + 2; f < i + 2 + 2 * n; f += 2) {
        let s = r.get(String(j.distinct[f]));
        if (!s) r.set(String(j.distinct[f]), (s = new Set()));
        const b = Buffer.from(String(j.distinct[f + 1]), 'base64').toString('latin1');
        for (let k = 0; k < b.length; k += 8) s.add(b.slice(k, k + 8));
      }
      i += 2 + 2 * n;
    }
  }
  const flatRows: Array<string | number> = [];
  for (const [pk, fs] of rows) {
    flatRows.push(pk, fs.size);
    for (const [f, v] of fs) flatRows.push(f, v.toString());
  }
  return {
    store: js[0]!.store,
    rows: flatRows,
    distinct: flattenDistinct(dist),
    n: js.reduce((a, j) => a + j.n, 0),
    ids: js.flatMap((j) => j.ids),
  };
}

/** `group` jobs in flight at once, merged per store. */
function grouped(g: number): Job[] {
  const out: Job[] = [];
  for (let i = 0; i < jobs.length; i += g) {
    const by = new Map<string, Job[]>();
    for (const j of jobs.slice(i, i + g)) by.set(j.store, [...(by.get(j.store) ?? []), j]);
    for (const js of by.values()) out.push(merge(js));
  }
  return out;
}

function sizes(js: Job[]) {
  let rows = 0,
    fields = 0,
    rankMembers = 0,
    sketchFields = 0,
    members = 0;
  for (const j of js) {
    for (let i = 0; i < j.rows.length;) {
      const n = Number(j.rows[i + 1]);
      rows++;
      fields += n;
      if (rules.rankOfPk(String(j.rows[i])))
        for (let f = i + 2; f < i + 2 + 2 * n; f += 2) if (!String(j.rows[f]).includes('#')) rankMembers++;
      i += 2 + 2 * n;
    }
    for (let i = 0; i < j.distinct.length;) {
      const n = Number(j.distinct[i + 1]);
      for (let f = i + 2; f < i + 2 + 2 * n; f += 2) {
        sketchFields++;
        members += Buffer.from(String(j.distinct[f + 1]), 'base64').length / 8;
      }
      i += 2 + 2 * n;
    }
  }
  const k = (x: number) => ((x * 1000) / total).toFixed(0);
  return `calls ${((js.length * 1000) / total).toFixed(2)}, rows ${k(rows)}, fields ${k(fields)}, ranking members ${k(rankMembers)}, sketch fields ${k(sketchFields)}, sketch members ${k(members)}`;
}

process.stdout.write(`${jobs.length} jobs, ${total} events; per 1,000 events:\n`);
/** Jobs of one store merged `k` at a time (what a group of k jobs of one store costs). */
const sameStore = (k: number): Job[] =>
  [...new Set(jobs.map((j) => j.store))].flatMap((st) => {
    const js = jobs.filter((j) => j.store === st);
    return Array.from({ length: Math.ceil(js.length / k) }, (_, i) => merge(js.slice(i * k, i * k + k)));
  });
const plans: Array<[string, Job[]]> = [
  ['1 job a call', jobs],
  ...[2, 3, group].map((k): [string, Job[]] => [`${k} jobs of one store merged`, sameStore(k)]),
  [`${group} in flight, merged per store`, grouped(group)],
];
for (const [name, js] of plans) process.stdout.write(`  ${name.padEnd(34)} ${sizes(js)}\n`);

if (process.env['CALLGRIND']) {
  const dir = mkdtempSync(join(tmpdir(), 'tally-cg-'));
  const wrap = join(dir, 'redis-cg.sh');
  writeFileSync(wrap, `#!/bin/sh\nexec valgrind --tool=callgrind --dump-instr=no --callgrind-out-file=${dir}/cg.%p redis-server "$@"\n`);
  chmodSync(wrap, 0o755);
  const irOf = (pid: number) => {
    const f = readdirSync(dir)
      .filter((x) => x.startsWith(`cg.${pid}`))
      .map((x) => readFileSync(join(dir, x), 'utf8'));
    return f.reduce((a, t) => a + Number(/^(?:summary|totals): (\d+)/m.exec(t)?.[1] ?? 0), 0);
  };
  for (const [name, js] of plans) {
    for (const step of ['SKETCH_ADD', 'APPLY'] as const) {
      const server = await startRedis({ appendonly: true, appendfsync: 'everysec', binary: wrap, startTimeoutMs: 120_000 });
      const redis = new Redis(server.url, { maxRetriesPerRequest: null });
      const buckets = new BucketStore({ redis, rules, prefix: 'p' });
      // Warm-up (scripts loaded, keys of another store), then count only the step.
      await buckets.sketches.add('warm', ['x', 0]);
      await buckets.applyRows('warm', 'w', [], { now, dedupeTtlSeconds: 3600 });
      execFileSync('callgrind_control', ['-z', String(server.pid)]);
      for (const j of js)
        if (step === 'SKETCH_ADD') await buckets.sketches.add(j.store, j.distinct);
        else await buckets.applyRows(j.store, `b${j.ids.join(',')}`, j.rows, { now, dedupeTtlSeconds: 3600 });
      execFileSync('callgrind_control', ['-d', String(server.pid)]);
      const ir = irOf(server.pid);
      process.stdout.write(
        `  ${name.padEnd(34)} ${step.padEnd(10)} ${((ir * 1000) / total / 1e6).toFixed(1)} M instructions per 1,000 events\n`,
      );
      redis.disconnect();
      await server.stop();
    }
  }
}

/**
 * A model of group commit in one aggregator: `slots` jobs in flight (its concurrency), each of one of `stores` stores
 * drawn at random, Redis one FIFO server. A job takes and completes through BullMQ and the collector's share
 * (`other`, Redis ms), builds its arguments (aggregator ms, on its own core), then SKETCH_ADD then APPLY; per store
 * and script, while a call is in flight later jobs queue and go together in the next call, whose Redis time is
 * k jobs' times `cost(k)` (relative cost per job, from the instructions above). Stage times are the second pass's
 * ms per 1,000-event job. Returns jobs per second of model time and the mean group size.
 */
function groupModel(slots: number, stores: number, grouping: boolean, cost: (k: number) => number, n = 20_000) {
  const T = { sketch: 4.5, apply: 9.0, other: 5.9, parse: 1.0, sketchArgs: 1.5, applyArgs: 1.5 };
  let redisFree = 0;
  const redis = (at: number, ms: number) => (redisFree = Math.max(at, redisFree) + ms);
  let seed = 1;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  type Ev = { at: number; seq: number; run: () => void };
  const events: Ev[] = [];
  let seq = 0;
  let now = 0;
  const push = (at: number, run: () => void) => {
    events.push({ at, seq: seq++, run });
  };
  const inFlight = new Set<string>();
  const queued = new Map<string, number[]>();
  const groups: number[] = [];
  let done = 0;
  const call = (script: 'sketch' | 'apply', store: number, jobs: number[], at: number) => {
    const key = `${script} ${store}`;
    if (grouping) inFlight.add(key);
    groups.push(jobs.length);
    const args = (script === 'sketch' ? T.sketchArgs : T.applyArgs) * jobs.length;
    const end = redis(at + args, T[script] * jobs.length * cost(jobs.length));
    push(end, () => {
      inFlight.delete(key);
      const q = queued.get(key);
      queued.delete(key);
      if (q) call(script, store, q, end);
      for (const s of jobs) {
        if (script === 'sketch') join('apply', s, end);
        else {
          done++;
          fetch(end);
        }
      }
    });
  };
  const join = (script: 'sketch' | 'apply', store: number, at: number) => {
    const key = `${script} ${store}`;
    if (grouping && inFlight.has(key)) queued.set(key, [...(queued.get(key) ?? []), store]);
    else call(script, store, [store], at);
  };
  const fetch = (at: number) => {
    const store = Math.floor(rand() * stores);
    push(redis(at, T.other) + T.parse, () => join('sketch', store, now));
  };
  for (let i = 0; i < slots; i++) fetch(0);
  while (done < n) {
    events.sort((a, b) => a.at - b.at || a.seq - b.seq);
    const e = events.shift()!;
    now = e.at;
    e.run();
  }
  return { jobsPerSecond: (done / now) * 1000, meanGroup: groups.reduce((a, b) => a + b, 0) / groups.length };
}
// Relative Redis cost per job of a group of k jobs of one store (APPLY + SKETCH_ADD instructions; second run above).
const measured: Record<number, number> = { 1: 1, 2: 0.884, 3: 0.821, 8: 0.678 };
const cost = (k: number) => {
  const ks = Object.keys(measured).map(Number);
  const lo = Math.max(...ks.filter((x) => x <= k));
  const his = ks.filter((x) => x >= k);
  const hi = his.length ? Math.min(...his) : lo;
  return hi === lo ? measured[lo]! : measured[lo]! + ((measured[hi]! - measured[lo]!) * (k - lo)) / (hi - lo);
};
process.stdout.write('\ngroup commit, modelled (jobs/s of model time, one job a call -> grouped; mean group):\n');
for (const [slots, stores] of [
  [8, 3],
  [16, 3],
  [32, 3],
  [8, 1],
  [8, 30],
] as const) {
  const a = groupModel(slots, stores, false, cost);
  const b = groupModel(slots, stores, true, cost);
  process.stdout.write(
    `  ${slots} in flight, ${stores} stores: ${a.jobsPerSecond.toFixed(1)} -> ${b.jobsPerSecond.toFixed(1)}, mean group ${b.meanGroup.toFixed(2)}\n`,
  );
}
process.exit(0);
