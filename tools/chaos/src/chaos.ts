import {
  backlog,
  checkFleetCounts,
  checkQueryApi,
  createRng,
  DEMO_STORES,
  everyBucketRules,
  expectedCounts,
  failedJobs,
  loadFleet,
  startFleet,
  waitForDrain,
  type Fleet,
  type FleetApp,
} from '@tally/loadgen';
import { isAlive, sleep } from '@tally/testing';
import { expect } from 'vitest';
import type { ChaosSettings } from './chaos-config';
import { NO_FAULTS, startFaultProxy, type FaultProxy } from './fault-proxy';

/** The fault kinds of the summary line, in its order. */
const FAULT_KINDS = ['sigkill', 'redis-restart', 'dynamo-outage', 'throttle', '500', 'slow', 'drop'] as const;

/**
 * The chaos run: a fleet (Redis with AOF always, dynalite on disk, a fault proxy in front of it for every app,
 * two aggregators and two writers, every row flushed after every bucket), seeded traffic through HTTP and
 * libs/client with duplicates and invalid events, and meanwhile a seeded schedule of SIGKILLs, crash points,
 * Redis restarts, DynamoDB outages and throttling/500/slow/dropped requests. Then: everything healed and drained,
 * every DynamoDB counter compared with the expected counts, and the query API too. Prints its progress, summary and
 * first problems, and asserts what every chaos test asserts: every accepted event counted exactly once, in each
 * DynamoDB cell and query answer, UniqueVisitors as in a run without faults, with no failed job, unexpected exit or
 * leaked process. Returns what the tests check besides.
 */
export async function runChaosExpectingExact(settings: ChaosSettings) {
  const rng = createRng(settings.seed).fork('faults');
  // The actions' own random waits, drawn as the schedule is made: actions overlap, so drawing them as they run would
  // make them depend on timing.
  const pauses = createRng(settings.seed).fork('fault-pauses');
  const faults: Record<string, number> = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0]));
  const kills: Record<string, number> = {};
  const killed = (what: string) => {
    faults['sigkill']!++;
    kills[what] = (kills[what] ?? 0) + 1;
  };
  let proxy: FaultProxy | undefined;
  let fleet: Fleet | undefined;
  let startupFailures = 0;
  const unexpectedExits: string[] = [];
  const t0 = Date.now();
  const at = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
  const say = (line: string) => console.log(`chaos: ${at()} ${line}`);

  try {
    fleet = await startFleet({
      stores: DEMO_STORES,
      rules: everyBucketRules(),
      replicas: { 'bucket-aggregator': 2, 'dynamo-writer': 2 }, // 1-second buckets, AOF always: startFleet's defaults
      clusterMasters: settings.redisMasters || undefined,
      queueShards: settings.queueShards,
      echo: settings.echo,
      appsDynamoEndpoint: async (target) => (proxy = await startFaultProxy({ target, seed: settings.seed })).url,
    });
    const f = fleet;
    const p = proxy!;
    console.log(
      `chaos: fleet up in ${at()} (${f.apps.map((a) => a.name).join(', ')}; redis ${f.cluster ? `cluster ${f.cluster.nodesEnv}, ${f.queueShards} queue shards` : f.redis.url}; dynalite ${f.dynalite.endpoint} behind ${p.url})`,
    );

    // Pids whose exit is accounted for: the schedule kills them on purpose, or their crash is reported already.
    const exitKnown = new Set<number>();
    const restart = async (app: FleetApp, env?: Record<string, string | undefined>) => {
      exitKnown.add(app.handle.process.pid);
      const r = await app.restart(env);
      startupFailures += r.startupFailures;
      if (r.startupFailures > 0) say(`${app.name} died ${r.startupFailures}x during start-up before it came up`);
    };

    /** Apps running with a crash point: their SIGKILL is the point. */
    const armed = new Set<string>();
    // Any exit the schedule did not cause is a crash: note it (once) with the app's last lines (restarted when healing).
    const checkExits = () => {
      for (const app of f.apps) {
        const proc = app.handle.process;
        if (!proc.exit || exitKnown.has(proc.pid) || armed.has(app.name)) continue;
        exitKnown.add(proc.pid);
        unexpectedExits.push(
          `${app.name} (pid ${proc.pid}) exited on its own: ${JSON.stringify(proc.exit)}; last output:\n${proc.output().split('\n').slice(-15).join('\n')}`,
        );
        say(`${app.name} exited on its own: ${JSON.stringify(proc.exit)}`);
      }
    };
    const monitor = setInterval(checkExits, 500);

    p.setRates(settings.rates);
    const { stats, accepted, done } = loadFleet(f, {
      load: {
        seed: settings.seed,
        products: 300,
        visitors: 1_500,
        maxEvents: settings.events,
        batchSize: [20, 150],
        lateShare: 0.15,
        previousMonthShare: 0.5,
        badShare: 0.03,
        extremeShare: 0.05,
      },
      retry: { deadlineMs: 600_000, maxDelayMs: 1_000 },
      rate: settings.events / settings.loadSeconds,
      concurrency: 6,
      duplicateShare: 0.1,
    });
    const progress = setInterval(
      () =>
        say(`sent ${stats.eventsSent}, accepted ${stats.accepted}, rejected ${stats.rejected}, retries ${JSON.stringify(stats.retries)}`),
      settings.mode === 'long' ? 30_000 : 10_000,
    );

    // The fault schedule: every action once in a seeded order, spread over the load phase. `target`: what it kills or
    // takes down (an app slot, redis, dynalite, the proxy); actions on one target run one after the other.
    const actions: Array<[name: string, target: string, run: () => Promise<unknown>]> = [];
    const repeat = (n: number, name: string, make: () => () => Promise<unknown>) => {
      for (let i = 0; i < n; i++) actions.push([name, name, make()]);
    };
    /** SIGKILL and restart an app; with a crash point, restart it armed: it SIGKILLs itself at the N-th time it reaches the point (mid-flush for the writer). */
    const kill = (app: FleetApp, point?: string, down = pauses.int(2_000)) =>
      actions.push([
        point ? `crash-point ${app.name} at ${point}` : `kill ${app.name}`,
        app.name,
        async () => {
          exitKnown.add(app.handle.process.pid);
          await app.handle.kill('SIGKILL');
          killed(app.name);
          if (!point) {
            await sleep(down);
            return restart(app);
          }
          armed.add(app.name);
          await restart(app, { TALLY_CRASH_POINT: point });
          exitKnown.add(app.handle.process.pid);
          const exit = await Promise.race([app.handle.process.exited, sleep(30_000).then(() => undefined)]);
          if (exit?.signal === 'SIGKILL') {
            killed(`${app.name} (${point.split('@')[0]})`);
            say(`${app.name} crashed itself at ${point}`);
          } else say(`${app.name} did not reach ${point} within 30 s`);
          await restart(app, { TALLY_CRASH_POINT: undefined });
          armed.delete(app.name);
        },
      ]);
    for (const app of f.apps) for (let i = 0; i < settings.killsPerApp; i++) kill(app);
    const writers = f.apps.filter((a) => a.app === 'dynamo-writer');
    const aggregators = f.apps.filter((a) => a.app === 'bucket-aggregator');
    for (let i = 0; i < (settings.mode === 'long' ? 2 : 1); i++) {
      kill(writers[i % writers.length]!, `writer:after-update@${rng.between(5, 40)}`);
      kill(aggregators[i % aggregators.length]!, `aggregator:after-apply@${rng.between(3, 20)}`);
    }
    // The collector twice as often as the rest: it is the edge that the retries have to survive.
    for (let i = 0; i < settings.killsPerApp; i++) kill(f.app('collector'));
    repeat(settings.redisRestarts, 'redis', () => {
      // On a cluster: one master, restarted on its AOF and nodes.conf (it serves its slots again).
      const node = f.cluster ? f.cluster.nodes[pauses.int(f.cluster.nodes.length)]! : f.redis;
      const down = 500 + pauses.int(2_500);
      return async () => {
        await node.kill('SIGKILL');
        killed('redis-server');
        faults['redis-restart']!++;
        await sleep(down);
        await node.restart();
        await f.cluster?.waitHealthy(60_000);
      };
    });
    repeat(settings.dynamoOutages, 'outage', () => async () => {
      p.setDown(true);
      faults['dynamo-outage']!++;
      await sleep(settings.outageSeconds * 1_000);
      p.setDown(false);
    });
    repeat(settings.dynaliteKills, 'dynalite', () => {
      const down = 500 + pauses.int(1_500);
      return async () => {
        await f.dynalite.kill('SIGKILL');
        killed('dynalite');
        await sleep(down);
        await f.dynalite.restart();
      };
    });
    for (let i = actions.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [actions[i], actions[j]] = [actions[j]!, actions[i]!];
    }
    // Each action starts in its slot, while earlier ones may still run (restarts, outages and crash points take
    // seconds each), once the previous action on its target is done: pack them into the first part of the load phase.
    const slot = (settings.loadSeconds * 1_000 * (settings.mode === 'long' ? 0.8 : 0.5)) / (actions.length + 1);
    const scheduleStart = Date.now();
    const last = new Map<string, Promise<unknown>>();
    const runs = actions.map(([name, target, run], i) => {
      const next = (last.get(target) ?? Promise.resolve()).then(async () => {
        await sleep(Math.max(0, scheduleStart + (i + 1) * slot - Date.now()));
        say(`fault ${i + 1}/${actions.length}: ${name}`);
        await run();
      });
      last.set(target, next);
      return next;
    });
    // Every action ended (none still restarting a process the teardown stops) before a failed one's error is thrown.
    const ended = await Promise.allSettled(runs);
    for (const r of ended) if (r.status === 'rejected') throw r.reason;
    say(`fault schedule done; waiting for the load to finish`);
    await done;
    clearInterval(progress);
    say(
      `load done: sent ${stats.eventsSent} events in ${stats.batches} batches (http ${stats.byVia.http}, client ${stats.byVia.client}), accepted ${stats.accepted}, rejected ${stats.rejected}, duplicates ${stats.duplicatesSent}, retries ${JSON.stringify(stats.retries)}`,
    );

    // Heal: no more faults; restart anything that died on its own (the monitor said so).
    clearInterval(monitor);
    checkExits();
    p.setRates(NO_FAULTS);
    p.setDown(false);
    for (const app of f.apps) if (app.handle.process.exit) await restart(app);

    const expected = expectedCounts(accepted, f.rules, f.zones);
    // Invariant 2: once every accepted batch is applied, a query is exact, whatever is still being flushed. Keep
    // writes slow (some past the SDK deadline, retried, some dropped after being applied) so that rows are
    // mid-flush while the query API answers.
    p.setOperations(['UpdateItem']);
    p.setRates({ slow: 0.7, drop: 0.1 });
    await waitForDrain(f, { timeoutMs: 360_000, folded: true });
    const b = await backlog(f);
    say(`every batch applied and folded (outboxes ${b.outboxes}, dirty rows ${b.dirtyRows}); querying while slow flushes run`);
    const liveQuery = await checkQueryApi(f, f.app('query-api').url, expected);
    p.setRates(NO_FAULTS);
    p.setOperations(undefined);
    Object.assign(faults, { throttle: p.counts.throttle, '500': p.counts.error500, slow: p.counts.slow, drop: p.counts.drop });
    say(`live query check done (${liveQuery.compared} values); draining`);

    await waitForDrain(f, { timeoutMs: 300_000 });
    say(`drained: queues idle, no bucket, outbox or dirty row left`);
    const { table, uniqueVisitors } = await checkFleetCounts(f, accepted);
    const query = await checkQueryApi(f, f.app('query-api').url, expected);
    const failed = await failedJobs(f);
    const keyLeaks = f.keyLeaks();

    // (Stopped again in finally: both are idempotent.)
    await f.stop();
    await p.close();
    const leakedPids = f.pids().flatMap((x) => (isAlive(x.pid) ? [`${x.what} (pid ${x.pid})`] : []));

    const mismatches = table.mismatches + query.mismatches.length + liveQuery.mismatches.length + uniqueVisitors.mismatches.length;
    say(
      `kills by target ${JSON.stringify(kills)}; table items ${table.scanned.items}, cells ${table.cells}; ` +
        `query API values compared ${liveQuery.compared} live + ${query.compared} after the drain, UniqueVisitors ${uniqueVisitors.compared} (sketch attributes ${table.scanned.sketches}); failed jobs ${failed.length}; startup failures ${startupFailures}`,
    );
    console.log(
      `chaos: events sent ${stats.eventsSent}, accepted ${stats.accepted}, rejected ${stats.rejected}, ` +
        `faults injected {${FAULT_KINDS.map((k) => `${k}:${faults[k] ?? 0}`).join(', ')}}, mismatches ${mismatches}`,
    );
    for (const s of table.samples) console.log(`  table: ${s}`);
    for (const s of [...liveQuery.mismatches, ...query.mismatches, ...uniqueVisitors.mismatches].slice(0, 20)) console.log(`  query: ${s}`);
    for (const s of [...failed, ...unexpectedExits, ...keyLeaks, ...leakedPids, ...stats.edgeMismatches].slice(0, 30))
      console.log(`  problem: ${s}`);

    expect(stats.edgeMismatches).toEqual([]);
    expect(stats.gaveUp).toBe(0);
    expect(stats.accepted).toBeGreaterThan(settings.events * 0.9);
    expect(table.samples).toEqual([]);
    // Invariant 2 above: as soon as every batch was applied, flushes still running, the query API is already exact.
    expect(liveQuery.mismatches).toEqual([]);
    expect(query.mismatches).toEqual([]);
    expect(uniqueVisitors.mismatches).toEqual([]);
    expect(mismatches).toBe(0);
    expect(table.cells).toBeGreaterThan(1_000);
    expect(failed).toEqual([]);
    // Apps that exited without being killed by the schedule (crashes), and started pids alive after teardown.
    expect(unexpectedExits).toEqual([]);
    expect(leakedPids).toEqual([]);
    return { stats, faults, uniqueVisitors, keyLeaks };
  } finally {
    await fleet?.stop().catch(() => undefined);
    await proxy?.close().catch(() => undefined);
  }
}
