import { BucketStore } from '@tally/buckets';
import type { Segment } from '@tally/contracts';
import { createDynamoClient, createDynamoMeter, writeRow } from '@tally/dynamo';
import { evaluateSegments, HistoryMemo, namedRange, readSeries, resolveMetrics, type QueryDeps } from '@tally/query';
import { compileRules, defaultRules, rollup, type NormalizedEvent, type RulesInput } from '@tally/schema';
import { createTenant, issueKey } from '@tally/tenants';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestTable, metricValue, REPO_ROOT, startApp, startDynalite, startProcess, startRedis } from '@tally/testing';
import type { AppHandle, ProcessHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { alternated, figure, type FigureContext } from '../figure';
import { BASELINE_RULES } from '../baseline';
import { measureIn } from '../in-checkout';
import { mean, quantile, timeLoop } from '../stats';
import { flushStore, prng, zipf } from '../workload';

const DAY = 86_400_000;
const STORE = 'BENCHQ';
const HEAVY = 'VHEAVY';
const PRODUCTS = 100;
const VISITORS = 300;
const INGEST_FLAG = '--ingest-loop';
/** A visitor from the Zipf tail: a few dozen events over the history. */
const TYPICAL = 'V150';

const SEGMENTS: Segment[] = [
  {
    name: 'p1-fan',
    match: 'all',
    rules: [
      { metric: 'ProductViews', key: 'P1', range: 'last3m', op: '>=', value: 3 },
      { metric: 'ProductViews', key: 'P2', range: 'allTime', op: '>=', value: 5 },
    ],
  },
  {
    name: 'spender',
    match: 'any',
    rules: [
      { metric: 'Revenue', range: 'last30d', op: '>', value: 100 },
      { metric: 'OrderCount', range: 'last12m', op: '>=', value: 3 },
      { metric: 'ViewCount', range: 'last7d', op: '>=', value: 10 },
    ],
  },
];

/** STORE's Redis buckets and DynamoDB table as the apps use them (on the rules of `rulesFile`, else the default rules), with a clock that never repeats. */
function storeOf(redisUrl: string, endpoint: string, table: string, rulesFile: string | undefined) {
  const redis = new Redis(redisUrl);
  const client = createDynamoClient({ endpoint, region: 'us-east-1' });
  const rules = compileRules(rulesFile ? (JSON.parse(readFileSync(rulesFile, 'utf8')) as RulesInput) : defaultRules);
  const buckets = new BucketStore({ redis, rules });
  const writeDeps = { client, table, meter: createDynamoMeter() };
  let clock = Date.now();
  const tick = () => (clock = Math.max(clock + 1, Date.now()));
  return {
    client,
    rules,
    buckets,
    apply: (batchId: string, events: NormalizedEvent[]) =>
      buckets.apply(STORE, batchId, rollup(rules, STORE, 'UTC', events), { now: tick(), dedupeTtlSeconds: 3_600 }),
    flush: () => flushStore(buckets, STORE, tick, Number.MAX_SAFE_INTEGER, (pk, entries) => writeRow(writeDeps, pk, entries)),
    close: async () => {
      await redis.quit();
      client.destroy();
    },
  };
}

/**
 * Latency and DynamoDB reads of the query API's questions, in-process and over HTTP (the method is in the markdown below),
 * on the default rules or those of `rulesFile` (the store, the background ingest and query-api alike).
 * @public (in-checkout.ts runs it for --baseline)
 */
export async function measure(ctx: FigureContext, rulesFile?: string) {
  const [runMs, historyDays] = ctx.quick ? [1_500, 120] : [10_000, 400];
  const redisServer = await startRedis();
  const dyn = await startDynalite({ mode: 'child' });
  const table = await createTestTable(dyn.endpoint);
  const { client, rules, buckets, apply, flush, close } = storeOf(redisServer.url, dyn.endpoint, table, rulesFile);
  const meter = createDynamoMeter();
  const deps: QueryDeps = { buckets, dynamo: { client, table, meter }, rules, historyMemo: new HistoryMemo() }; // as the query API runs it
  let app: AppHandle | undefined;
  let ingestProc: ProcessHandle | undefined;
  try {
    await createTenant({ dynamo: client, table }, STORE);
    const key = await issueKey({ dynamo: client, table }, STORE, ['read'], 'bench');
    await buckets.registerStore(STORE);

    // History: `historyDays` days of traffic (Zipf products and visitors), plus one heavy visitor who viewed 40
    // products and ordered now and then, written to DynamoDB every 30 days as a writer would.
    ctx.log(`seeding ${historyDays} days of history`);
    const rnd = prng(7);
    const product = zipf(PRODUCTS, 1.05, rnd);
    const visitor = zipf(VISITORS, 0.8, rnd);
    const today = Date.now();
    for (let d = historyDays; d >= 0; d--) {
      const dayTs = today - d * DAY;
      const at = () => dayTs - Math.floor(rnd() * DAY * 0.9);
      const events: NormalizedEvent[] = [];
      for (let i = 0; i < 150; i++) {
        const ts = at();
        if (rnd() < 0.95) events.push({ type: 'view', ts, dims: { product: `P${product()}`, visitor: `V${visitor()}` } });
        else events.push({ type: 'order', ts, value: (Math.floor(rnd() * 20000) / 100).toFixed(2), dims: { visitor: `V${visitor()}` } });
      }
      for (let i = 0; i < 4; i++)
        events.push({ type: 'view', ts: at(), dims: { product: `P${1 + Math.floor(rnd() * 40)}`, visitor: HEAVY } });
      if (d % 20 === 0) events.push({ type: 'order', ts: dayTs - 3_600_000, value: '42.50', dims: { visitor: HEAVY } });
      await apply(`q-${historyDays + 1 - d}`, events);
      if (d % 30 === 0) await flush();
    }
    await flush();

    // Concurrent ingest in its own process (so its work does not sit in the measured event loop): batches of 100
    // current events every 10 ms, every row flushed each second. The heavy visitor is not in them, so its session
    // cache stays warm, as between two page views of one session.
    const load0 = loadavg()[0]!;
    const ingestArgs = [fileURLToPath(import.meta.url), INGEST_FLAG, redisServer.url, dyn.endpoint, table, rulesFile ?? ''];
    ingestProc = await startProcess(process.execPath, ['--import', 'tsx', ...ingestArgs], { cwd: REPO_ROOT, name: 'query-bench-ingest' });
    await ingestProc.waitForLine(/^ingested \d+/, { timeoutMs: 120_000 });
    const ingestStart = performance.now();

    app = await startApp('query-api', {
      env: {
        REDIS_URL: redisServer.url,
        DYNAMODB_ENDPOINT: dyn.endpoint,
        DYNAMODB_TABLE: table,
        ...(rulesFile ? { RULES_FILE: rulesFile } : {}),
      },
      timeoutMs: 120_000, // a start-up on a loaded machine
      from: 'sources', // as every bench fleet (load.ts)
    });
    // Each question: one in-process call (returns the DynamoDB requests it made), and the same over HTTP (query-api:
    // POST with a body, else GET).
    const metrics = resolveMetrics(rules, ['ViewCount', 'OrderCount', 'Revenue']);
    const seriesQ = (name: string, label: string, range: 'last30d' | 'last3m' | 'all') => ({
      name,
      label,
      path: `/v1/series?metrics=ViewCount,OrderCount,Revenue${range === 'all' ? '&granularity=total' : `&range=${range}&granularity=day`}`,
      body: undefined as unknown,
      call: async () => {
        const [r, granularity] = range === 'all' ? (['all', 'total'] as const) : [namedRange(range, 'UTC', Date.now()), 'day' as const];
        return (await readSeries(deps, { store: STORE, pk: STORE, metrics, range: r, granularity })).dynamoRequests;
      },
    });
    const segmentsQ = (name: string, label: string, visitor: string) => ({
      name,
      label,
      path: '/v1/segments/evaluate',
      body: { visitor, segments: SEGMENTS } as unknown,
      call: async () => {
        const pk = rules.pkOf(STORE, 'visitor', [visitor]);
        const at = { store: STORE, pk, timeZone: 'UTC', now: Date.now(), segments: SEGMENTS, cacheTtlSeconds: 1_800 };
        return (await evaluateSegments(deps, at)).dynamoRequests;
      },
    });
    const heavyName = `segment evaluation, warm cache, heavy visitor (${4 * (historyDays + 1)} views of 40 products; 2 segments, 5 rules)`;
    const scenarios = [
      seriesQ('series, last 30 days by day (store row)', 'last30d', 'last30d'),
      seriesQ('series, last 3 months by day (store row)', 'last3m', 'last3m'),
      seriesQ('series, all time (granularity total)', 'all-time', 'all'),
      segmentsQ(`segment evaluation, warm cache, typical visitor ${TYPICAL} (2 segments, 5 rules)`, 'segments warm (typical)', TYPICAL),
      segmentsQ(heavyName, 'segments warm (heavy)', HEAVY),
    ];

    const rows = [];
    for (const s of scenarios) {
      ctx.log(s.name);
      await s.call(); // warm-up (fills the segment cache)
      let [maxDynamoRequests, calls] = [0, 0];
      const [units0, cpu0] = [meter.totals().readUnits, process.cpuUsage()];
      const lat = await timeLoop(runMs, async () => {
        maxDynamoRequests = Math.max(maxDynamoRequests, await s.call());
        calls++;
      });
      const cpu = process.cpuUsage(cpu0);
      const method = s.body ? 'POST' : 'GET';
      const headers = { authorization: `Bearer ${key}`, ...(s.body ? { 'content-type': 'application/json' } : {}) };
      const httpCall = async () => {
        const res = await fetch(app!.url + s.path, { method, headers, body: s.body ? JSON.stringify(s.body) : undefined });
        if (res.status !== 200) throw new Error(`${method} ${s.path}: ${res.status} ${await res.text()}`);
        await res.arrayBuffer();
      };
      await httpCall();
      // The time inside the query-api process, from its own request histogram.
      const labels = { route: s.path.split('?')[0]!, status_code: '200' };
      const served = async () => {
        const text = await app!.metrics();
        return ['sum', 'count'].map((n) => metricValue(text, `tally_http_request_duration_seconds_${n}`, labels));
      };
      const [sum0, count0] = await served();
      const httpLat = await timeLoop(runMs, httpCall);
      const [sum1, count1] = await served();
      rows.push({
        name: s.name,
        label: s.label,
        calls,
        p50: quantile(lat, 0.5),
        p99: quantile(lat, 0.99),
        mean: mean(lat),
        maxDynamoRequests,
        readUnitsPerCall: (meter.totals().readUnits - units0) / calls,
        cpuMsPerCall: (cpu.user + cpu.system) / 1000 / calls,
        serverMeanMs: ((sum1! - sum0!) / Math.max(1, count1! - count0!)) * 1000,
        httpP50: quantile(httpLat, 0.5),
        httpP99: quantile(httpLat, 0.99),
      });
    }
    const ingestSeconds = (performance.now() - ingestStart) / 1000;
    await ingestProc.kill('SIGTERM');
    const counts = [...ingestProc.output().matchAll(/^ingested (\d+)/gm)].map((m) => Number(m[1]));
    const ingested = (counts.at(-1) ?? 0) - (counts[0] ?? 0);
    return { rows, historyDays, ingested, ingestSeconds, loadAverage: (load0 + loadavg()[0]!) / 2 };
  } finally {
    await ingestProc?.kill('SIGKILL');
    await app?.stop();
    await close();
    await dyn.stop();
    await redisServer.stop();
  }
}

const ms = (n: number) => n.toFixed(2);
type QueryFigure = Awaited<ReturnType<typeof measure>>;

const AVERAGED = ['p50', 'p99', 'mean', 'readUnitsPerCall', 'cpuMsPerCall', 'serverMeanMs', 'httpP50', 'httpP99'] as const;

/** Two rounds of one side as one: each row's figures averaged (the most DynamoDB requests kept), the ingest summed. */
function meanOf([a, b]: QueryFigure[]): QueryFigure {
  const rows = a!.rows.map((x) => {
    const y = b!.rows.find((r) => r.label === x.label)!;
    const means = Object.fromEntries(AVERAGED.map((k) => [k, (x[k] + y[k]) / 2]));
    return { ...x, calls: x.calls + y.calls, ...means, maxDynamoRequests: Math.max(x.maxDynamoRequests, y.maxDynamoRequests) };
  });
  const [ingested, ingestSeconds] = [a!.ingested + b!.ingested, a!.ingestSeconds + b!.ingestSeconds];
  return { rows, historyDays: a!.historyDays, ingested, ingestSeconds, loadAverage: (a!.loadAverage + b!.loadAverage) / 2 };
}

export const queryFigure = figure('query', async (ctx) => {
  // This checkout on the default rules, in this process. With --baseline, then each side twice, in child processes of
  // its own, alternated (this checkout, that commit, that commit, this checkout): the machine's drift and a fresh
  // process's state fall on both alike, and each side's figures are the means of its two rounds. (Measured in this
  // process and that commit's after it, the ratios moved from x0.92 to x1.22 between two runs of the same code.) Both
  // sides on one rules file, the rules that commit knows: with the default rules this checkout's background ingest
  // also adds unique-visitor sketches and writes them each second, more work beside the measured calls.
  const r = await measure(ctx);
  let [before, after]: Array<QueryFigure | undefined> = [];
  if (ctx.baseline) {
    const dir = mkdtempSync(join(tmpdir(), 'tally-query-bench-'));
    const rulesFile = join(dir, 'rules.json');
    writeFileSync(rulesFile, JSON.stringify(BASELINE_RULES));
    try {
      const sides = ['this checkout', 'baseline'] as const;
      const runs = await alternated(sides, 2, (side) => measureIn<QueryFigure>(ctx, 'query', side, rulesFile));
      [after, before] = [meanOf(runs['this checkout']), meanOf(runs.baseline)];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const was = (x: QueryFigure['rows'][number]) => before?.rows.find((y) => y.label === x.label);
  const byLabel = (label: string) => r.rows.find((x) => x.label === label)!;
  const oneRequest = ['last30d', 'all-time'].every((l) => byLabel(l).maxDynamoRequests === 1);
  const seg = byLabel('segments warm (typical)');
  const heavy = byLabel('segments warm (heavy)');
  const segOk = seg.p99 < 5;
  const summary =
    r.rows.map((x) => `${x.label} p50/p99 ${ms(x.p50)}/${ms(x.p99)} ms (HTTP ${ms(x.httpP50)}/${ms(x.httpP99)})`).join('; ') +
    `; one DynamoDB request within two months: ${oneRequest ? 'met' : 'NOT met'}; warm segment p99 < 5 ms (typical visitor): ${segOk ? 'met' : 'NOT met'} (load average ${r.loadAverage.toFixed(1)})` +
    (before
      ? `; against ${ctx.baseline!.ref} (${ctx.baseline!.commit.slice(0, 10)}) in the same run, p99 / CPU per call: ` +
        after!.rows
          .map((x) => `${x.label} x${(x.p99 / was(x)!.p99).toFixed(2)} / x${(x.cpuMsPerCall / was(x)!.cpuMsPerCall).toFixed(2)}`)
          .join(', ')
      : '');
  const markdown = [
    `One store with ${r.historyDays} days of history (${PRODUCTS} products, ${VISITORS} visitors, a heavy visitor with 40 viewed products), real`,
    'redis-server and dynalite (a child process) on the same 2-core machine. While measuring, a background process applied',
    `batches of 100 events every 10 ms and flushed every row each second (${Math.round(r.ingested / r.ingestSeconds).toLocaleString('en-US')} events/s), so`,
    'every answer merges live Redis counts. In-process = the libs/query call the route makes (readSeries, evaluateSegments),',
    'sequential calls; HTTP = the same question to a query-api process (fetch, keep-alive, sequential), which adds auth',
    '(cached key), zod validation and JSON serialization; "HTTP server mean" is the time inside the query-api process from its own',
    'tally_http_request_duration_seconds histogram (the rest of the HTTP latency is the client and the hops between processes).',
    `1-minute load average during the run: ${r.loadAverage.toFixed(1)} on 2 cores: other work on the machine stretches the latencies;`,
    '"CPU ms / call" is the measuring process\'s own CPU time per call, which load does not stretch.',
    '',
    '| question | calls | p50 ms | p99 ms | mean ms | CPU ms / call | DynamoDB requests / call | read units / call | HTTP p50 ms | HTTP p99 ms | HTTP server mean ms |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...r.rows.map(
      (x) =>
        `| ${x.name} | ${x.calls} | ${ms(x.p50)} | ${ms(x.p99)} | ${ms(x.mean)} | ${ms(x.cpuMsPerCall)} | ${x.maxDynamoRequests} | ${x.readUnitsPerCall.toFixed(2)} | ${ms(x.httpP50)} | ${ms(x.httpP99)} | ${ms(x.serverMeanMs)} |`,
    ),
    '',
    `Targets: one DynamoDB request per series request within two months — ${oneRequest ? 'met' : 'NOT met'}; warm segment evaluation p99 under 5 ms (in-process, typical visitor) — ${segOk ? 'met' : 'NOT met'} (${ms(seg.p99)} ms; over HTTP ${ms(seg.httpP99)} ms; heavy visitor ${ms(heavy.p99)} ms, ${ms(heavy.cpuMsPerCall)} ms CPU per call).`,
    "A warm evaluation's CPU grows with the visitor's history: libs/query parses the cached JSON items and converts every attribute",
    'to a BigInt on each call; keeping parsed items in memory per cache version would remove most of it.',
    'Read units are what dynalite reports for consistent reads (4 KB per unit, rounded up per item read); a series of last',
    '3 months reads four month items in one Query. A warm segment evaluation reads nothing from DynamoDB: the',
    "visitor's items come from the Redis session cache, merged with the counts above their watermarks.",
    ...(before && after
      ? [
          '',
          `**Before/after, same run** (\`--baseline ${ctx.baseline!.ref}\`: ${ctx.baseline!.commit.slice(0, 10)}, "${ctx.baseline!.subject}"): the same measurement with that`,
          `commit's libraries and query-api (a git worktree). Each side ran twice in child processes of its own, alternated (this checkout, that commit,`,
          `that commit, this checkout), and the table gives each side's means of its two rounds (its calls added up). Both sides ran on one rules`,
          `file, the rules that commit knows (no unique-visitor sketches, no page rows), for the store, the background ingest and query-api:`,
          `on the default rules (the table above) the background ingest also adds and writes sketches, more work beside the measured calls.`,
          `Load average ${after.loadAverage.toFixed(1)} during this checkout's rounds, ${before.loadAverage.toFixed(1)} during that commit's. Each cell is that commit / this checkout.`,
          '',
          '| question | p50 ms | p99 ms | CPU ms / call | HTTP p99 ms | p99 × | CPU × |',
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
          ...after.rows.map((x) => {
            const [b, pair] = [was(x)!, (f: (y: typeof x) => number) => `${ms(f(was(x)!))} / ${ms(f(x))}`];
            return `| ${x.label} | ${pair((y) => y.p50)} | ${pair((y) => y.p99)} | ${pair((y) => y.cpuMsPerCall)} | ${pair((y) => y.httpP99)} | ${(x.p99 / b.p99).toFixed(2)} | ${(x.cpuMsPerCall / b.cpuMsPerCall).toFixed(2)} |`;
          }),
        ]
      : []),
  ].join('\n');
  return { summary, markdown };
});

/** The background ingest process: `query.ts --ingest-loop <redis url> <dynamodb endpoint> <table> <rules file or ''>`. */
async function ingestLoop(redisUrl: string, endpoint: string, table: string, rulesFile: string): Promise<void> {
  const { apply, flush, close } = storeOf(redisUrl, endpoint, table, rulesFile || undefined);
  const rnd = prng(11);
  const product = zipf(PRODUCTS, 1.05, rnd);
  const visitor = zipf(VISITORS, 0.8, rnd);
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  let [ingested, lastFlush, lastReport] = [0, performance.now(), 0];
  for (let b = 0; !stop; b++) {
    const now = Date.now();
    const visit = (): NormalizedEvent => ({ type: 'view', ts: now, dims: { product: `P${product()}`, visitor: `L${visitor()}` } });
    await apply(`live-${process.pid}-${b}`, Array.from({ length: 100 }, visit));
    ingested += 100;
    if (performance.now() - lastFlush > 1_000) {
      await flush();
      lastFlush = performance.now();
    }
    if (performance.now() - lastReport > 500) {
      process.stdout.write(`ingested ${ingested}\n`);
      lastReport = performance.now();
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  process.stdout.write(`ingested ${ingested}\n`);
  await close();
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === INGEST_FLAG) {
  await ingestLoop(process.argv[3]!, process.argv[4]!, process.argv[5]!, process.argv[6] ?? '');
  process.exit(0);
}
