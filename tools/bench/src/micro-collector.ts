// npx tsx tools/bench/src/micro-collector.ts [rounds]: the collector's candidate changes, each measured alone against
// the code it would replace (copied here), alternated in one process over loadgen traffic (1000-event batches):
// CPU per 1000-event batch, the minimum and the median of the rounds. The BullMQ part enqueues the same rolled-up
// jobs into a fresh redis-server (AOF everysec) and reads its CPU too, and what it stores per job.
import { hash } from 'node:crypto';
import { batchFingerprint } from '@tally/intake';
import { generateLoad } from '@tally/loadgen';
import { compileRules, defaultRules, flattenDistinct, flattenRows, rollup, validateEvents, type DistinctAdds } from '@tally/schema';
import { startRedis } from '@tally/testing';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { CATALOGUE, STORES } from './load';
import { cpuSeconds } from './proc';

const ROUNDS = Number(process.argv[2] ?? 8);
const rules = compileRules(defaultRules);
const now = Date.now();
const zones = Object.fromEntries(STORES.map((s) => [s.id, s.timeZone]));
const lim = { now, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };
const batches = [...generateLoad({ seed: 1, stores: STORES, ...CATALOGUE, batchSize: 1000, maxEvents: 50_000, now })].map((b) => {
  const body = JSON.stringify(b.events);
  const events = validateEvents(rules, JSON.parse(body), lim).events;
  return { store: b.store, tz: zones[b.store]!, body, buf: Buffer.from(body), events };
});

const ms = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `${s[0]!.toFixed(3)}, ${s[Math.floor(s.length / 2)]!.toFixed(3)}`;
};
/** Old and new alternated (old, new, new, old, ...), ROUNDS each; ms per 1000-event batch, min and median. */
function pair(name: string, old: (b: (typeof batches)[number]) => unknown, neu: (b: (typeof batches)[number]) => unknown) {
  const run = (f: typeof old) => {
    const c0 = process.cpuUsage();
    for (let r = 0; r < 3; r++) for (const b of batches) f(b);
    return ms(process.cpuUsage(c0)) / (3 * batches.length);
  };
  run(old);
  run(neu);
  const o: number[] = [];
  const n: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) {
      o.push(run(old));
      n.push(run(neu));
    } else {
      n.push(run(neu));
      o.push(run(old));
    }
  }
  console.log(`${name.padEnd(58)} before ${stats(o)}  after ${stats(n)}  (ms per batch: min, median)`);
}

// 1. Fingerprint: the canonical one (kept for its semantics) against a SHA-256 of the body's bytes.
pair(
  'fingerprint: canonical events -> raw body bytes',
  (b) => batchFingerprint(b.events),
  (b) => hash('sha256', b.buf, 'base64url'),
);
// 2. The body: as a string (fastify decodes once) against a Buffer decoded by the parser (what parseAs buffer gives).
pair(
  'body: JSON.parse(string) -> JSON.parse(buffer.toString())',
  (b) => JSON.parse(b.body),
  (b) => JSON.parse(b.buf.toString('utf8')),
);

// 3. flattenDistinct: members joined without the spread.
function flattenDistinctOld(adds: DistinctAdds): Array<string | number> {
  const out: Array<string | number> = [];
  for (const [pk, fields] of adds) {
    out.push(pk, fields.size);
    for (const [field, members] of fields) out.push(field, Buffer.from([...members].join(''), 'latin1').toString('base64'));
  }
  return out;
}
const adds = new Map(
  batches.map((b) => {
    const d: DistinctAdds = new Map();
    rollup(rules, b.store, b.tz, b.events, new Map(), d);
    return [b, d];
  }),
);
pair(
  'flattenDistinct: spread+join -> new',
  (b) => flattenDistinctOld(adds.get(b)!),
  (b) => flattenDistinct(adds.get(b)!),
);

// 4. BullMQ: add against addBulk of one job, the caller's and redis-server's CPU, and what Redis keeps per job.
const server = await startRedis({ appendonly: true, appendfsync: 'everysec' });
const redis = new Redis(server.url, { maxRetriesPerRequest: null });
const jobOpts = {
  attempts: 10,
  backoff: { type: 'exponential', delay: 500, jitter: 0.5 },
  removeOnComplete: true,
  removeOnFail: { age: 14 * 86_400, count: 100_000 },
};
const queue = new Queue('events', { connection: redis, prefix: 'pq', defaultJobOptions: jobOpts });
const payloads = batches.map((b, i) => {
  const distinct: DistinctAdds = new Map();
  const rows = flattenRows(rollup(rules, b.store, b.tz, b.events, new Map(), distinct));
  return {
    batchId: `b${i}`,
    store: b.store,
    rows,
    distinct: flattenDistinct(distinct),
    count: b.events.length,
    receivedAt: now,
    source: 'http',
  };
});
let seq = 0;
const infoField = async (section: string, field: string) =>
  Number(new RegExp(`${field}:(\\d+)`).exec(await redis.info(section))?.[1] ?? Number.NaN);
/** 5 × the 50 jobs, one at a time, as the collector adds them (redis-server's CPU is read in clock ticks of 10 ms). */
async function enqueueRound(kind: 'addBulk' | 'add') {
  const [r0, c0] = [cpuSeconds(server.pid), process.cpuUsage()];
  for (let k = 0; k < 5; k++)
    for (const p of payloads) {
      const id = `j${seq++}`;
      const data = { ...p, batchId: id };
      if (kind === 'addBulk') await queue.addBulk([{ name: 'events', data, opts: { jobId: id } }]);
      else await queue.add('events', data, { jobId: id });
    }
  const caller = ms(process.cpuUsage(c0)) / (5 * payloads.length);
  const rs = ((cpuSeconds(server.pid) - r0) * 1000) / (5 * payloads.length);
  await queue.drain();
  return { caller, rs };
}
await enqueueRound('addBulk');
await enqueueRound('add');
const res = { addBulk: { caller: [] as number[], rs: [] as number[] }, add: { caller: [] as number[], rs: [] as number[] } };
for (let r = 0; r < ROUNDS; r++) {
  const order: Array<'addBulk' | 'add'> = r % 2 === 0 ? ['addBulk', 'add'] : ['add', 'addBulk'];
  for (const k of order) {
    const x = await enqueueRound(k);
    res[k].caller.push(x.caller);
    res[k].rs.push(x.rs);
  }
}
console.log(
  `${'BullMQ addBulk([one job]) -> add, the caller'.padEnd(58)} before ${stats(res.addBulk.caller)}  after ${stats(res.add.caller)}`,
);
console.log(`${'BullMQ addBulk([one job]) -> add, redis-server'.padEnd(58)} before ${stats(res.addBulk.rs)}  after ${stats(res.add.rs)}`);

// What Redis holds per waiting job, and the AOF bytes and commands per job.
const mem0 = await infoField('memory', 'used_memory');
const aof0 = await infoField('persistence', 'aof_current_size');
await redis.config('RESETSTAT');
for (const p of payloads) await queue.add('events', { ...p, batchId: `m${seq}` }, { jobId: `m${seq++}` });
const mem1 = await infoField('memory', 'used_memory');
const aof1 = await infoField('persistence', 'aof_current_size');
const jobKey = `pq:events:m${seq - 1}`;
const fields = (await redis.hgetall(jobKey)) as Record<string, string>;
const usage = Number(await redis.call('MEMORY', 'USAGE', jobKey));
const json = JSON.stringify(payloads[0]);
console.log(
  `per job: used_memory +${Math.round((mem1 - mem0) / payloads.length)} B, AOF +${Math.round((aof1 - aof0) / payloads.length)} B, job hash ${usage} B (MEMORY USAGE) with fields ${Object.entries(
    fields,
  )
    .map(([k, v]) => `${k}=${v.length}`)
    .join(' ')}; the data's JSON ${json.length} B`,
);
console.log(
  (await redis.info('commandstats'))
    .split('\n')
    .filter((l) => l.startsWith('cmdstat_'))
    .join('\n'),
);
await queue.close();
await redis.quit();
await server.stop();
