// npx tsx tools/bench/src/micro-apply.ts: redis-server CPU per 1000 events of the APPLY script alone, over 200 rolled-up
// 1000-event loadgen batches (AOF everysec): the Redis side of a candidate change to the script.
import { BucketStore } from '@tally/buckets';
import { generateLoad } from '@tally/loadgen';
import { compileRules, defaultRules, flattenRows, rollup, validateEvents } from '@tally/schema';
import { startRedis } from '@tally/testing';
import { Redis } from 'ioredis';
import { CATALOGUE, STORES } from './load';
import { cpuSeconds } from './proc';
const rules = compileRules(defaultRules);
const now = Date.now();
const zones = Object.fromEntries(STORES.map((s) => [s.id, s.timeZone]));
const lim = { now, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };
const jobs = [...generateLoad({ seed: 1, stores: STORES, ...CATALOGUE, batchSize: 1000, maxEvents: 200_000, now })].map((b) => {
  const events = validateEvents(rules, b.events, lim).events;
  return { store: b.store, rows: flattenRows(rollup(rules, b.store, zones[b.store]!, events)), n: events.length };
});
const redis = await startRedis({ appendonly: true, appendfsync: 'everysec' });
const client = new Redis(redis.url);
const store = new BucketStore({ redis: client, rules, prefix: 'mb' });
const c0 = cpuSeconds(redis.pid);
let events = 0;
let i = 0;
for (const j of jobs) {
  await store.applyRows(j.store, `b${i++}`, j.rows, { now, dedupeTtlSeconds: 3600 });
  events += j.n;
}
const c1 = cpuSeconds(redis.pid);
console.log(`APPLY: ${(((c1 - c0) * 1e6) / events).toFixed(2)} ms redis CPU per 1000 events over ${events} events`);
client.disconnect();
await redis.stop();
