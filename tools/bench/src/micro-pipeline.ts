// npx tsx tools/bench/src/micro-pipeline.ts: CPU per 1000-event batch of each JS stage of the ingest path (body parse, validate,
// fingerprint, rollup, counts and distinct members in one pass, job serialization; the aggregator's job parse for an events job, a rows job and
// a rows job with its distinct members), on loadgen
// traffic in one process: what each candidate change to the hot path saves, measured without the fleet's noise.
import { generateLoad } from '@tally/loadgen';
import { checkFlatRows, eventsJobSchema } from '@tally/queues';
import { compileRules, defaultRules, flattenDistinct, flattenRows, rollup, rollupDistinct, validateEvents } from '@tally/schema';
import { batchFingerprint } from '@tally/intake';
import { CATALOGUE, STORES } from './load';
const rules = compileRules(defaultRules);
const now = Date.now();
const zones = Object.fromEntries(STORES.map((s) => [s.id, s.timeZone]));
const batches = [...generateLoad({ seed: 1, stores: STORES, ...CATALOGUE, batchSize: 1000, maxEvents: 50_000, now })].map((b) => ({
  store: b.store,
  body: JSON.stringify(b.events),
}));
const lim = { now, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };
const t = (name: string, f: (b: (typeof batches)[number]) => unknown) => {
  const c0 = process.cpuUsage();
  let n = 0;
  for (let r = 0; r < 3; r++)
    for (const b of batches) {
      f(b);
      n++;
    }
  const c = process.cpuUsage(c0);
  console.log(name.padEnd(40), ((c.user + c.system) / 1000 / n).toFixed(3), 'ms per 1000-event batch');
};
const parsed = batches.map((b) => ({ store: b.store, events: validateEvents(rules, JSON.parse(b.body), lim).events }));
const jobsOld = parsed.map((p) => JSON.stringify({ batchId: 'b', store: p.store, events: p.events, receivedAt: 1, source: 'http' }));
const jobsNew = parsed.map((p) =>
  JSON.stringify({
    batchId: 'b',
    store: p.store,
    rows: flattenRows(rollup(rules, p.store, zones[p.store]!, p.events)),
    count: p.events.length,
    receivedAt: 1,
    source: 'http',
  }),
);
const distinctOf = (store: string, events: (typeof parsed)[number]['events']) =>
  flattenDistinct(rollupDistinct(rules, store, zones[store]!, events));
/** What the collector does: counts and distinct members in one pass, both flat. */
const rolledUp = (store: string, events: (typeof parsed)[number]['events']) => {
  const distinct = new Map();
  return [flattenRows(rollup(rules, store, zones[store]!, events, new Map(), distinct)), flattenDistinct(distinct)];
};
const jobsDist = parsed.map((p, i) => JSON.stringify({ ...JSON.parse(jobsNew[i]!), distinct: distinctOf(p.store, p.events) }));
const mean = (js: string[]) => js.reduce((a, j) => a + j.length, 0) / js.length;
console.log('job bytes old/new/new+distinct', mean(jobsOld), mean(jobsNew), mean(jobsDist));
for (let k = 0; k < 2; k++) {
  t('JSON.parse body', (b) => JSON.parse(b.body));
  const evs = new Map(batches.map((b) => [b, JSON.parse(b.body)]));
  t('validate', (b) => validateEvents(rules, evs.get(b), lim));
  const ok = new Map(batches.map((b, i) => [b, parsed[i]!.events]));
  t('fingerprint', (b) => batchFingerprint(ok.get(b)!));
  t('rollup', (b) => rollup(rules, b.store, zones[b.store]!, ok.get(b)!));
  t('rollup+flatten', (b) => flattenRows(rollup(rules, b.store, zones[b.store]!, ok.get(b)!)));
  t('rollup+distinct+flatten (one pass)', (b) => rolledUp(b.store, ok.get(b)!));
  t('stringify events job', (b) => JSON.stringify({ events: ok.get(b) }));
  const rw = new Map(batches.map((b) => [b, flattenRows(rollup(rules, b.store, zones[b.store]!, ok.get(b)!))]));
  t('stringify rows job', (b) => JSON.stringify({ rows: rw.get(b) }));
  const jo = new Map(batches.map((b, i) => [b, jobsOld[i]!]));
  const jn = new Map(batches.map((b, i) => [b, jobsNew[i]!]));
  t('agg old: parse+zod', (b) => eventsJobSchema.parse(JSON.parse(jo.get(b)!)));
  t('agg new: parse+zod+check', (b) => eventsJobSchema.parse(JSON.parse(jn.get(b)!)));
  t('checkFlatRows', (b) => checkFlatRows(b.store, rw.get(b)!));
  const jd = new Map(batches.map((b, i) => [b, jobsDist[i]!]));
  t('agg new+distinct: parse+zod+check', (b) => eventsJobSchema.parse(JSON.parse(jd.get(b)!)));
}
