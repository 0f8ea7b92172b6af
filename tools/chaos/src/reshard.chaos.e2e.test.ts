import { keySlot, storeShard } from '@tally/key-layout';
import {
  backlog,
  checkQueryApi,
  checkTable,
  DEMO_STORES,
  everyBucketRules,
  expectedCounts,
  failedJobs,
  loadFleet,
  startFleet,
  waitForDrain,
  type Fleet,
} from '@tally/loadgen';
import { replicaInSync, sleep, startClusterNode, waitFor, withDeadline, type RedisClusterHandle, type RedisHandle } from '@tally/testing';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { chaosSettings } from './chaos-config';

// The fleet on a 3-master Redis Cluster while it changes under load: slots moved as `redis-cli --cluster reshard`
// moves them (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE in small batches, SETSLOT NODE), masters failed over by
// hand and by SIGKILL, a master added and removed with `redis-cli --cluster add-node`, `rebalance` and `del-node`. Load
// through HTTP and @tally/client, the query API polled meanwhile (never a count above the final one or falling); then
// drained, every DynamoDB cell and query answer compared with the accepted events. Short (npm test): one reshard of a
// smaller load; long (npm run test:chaos): every scenario at full size.

const LONG = chaosSettings().mode === 'long';
const EVENTS = 9_000;
const RATE = 600;
const SHARDS = 3;
const RUN_MS = 480_000;

const log = (line: string) => console.log(`reshard chaos: ${line}`);
const run = promisify(execFile);

/** redis-cli --cluster <args>, as an operator runs it; its output's last lines. */
async function redisCli(args: string[]): Promise<string> {
  const t0 = Date.now();
  const { stdout } = await run('redis-cli', ['--cluster', ...args], { timeout: 300_000, maxBuffer: 64 * 1024 * 1024 });
  log(`redis-cli --cluster ${args.join(' ')}: ${Date.now() - t0} ms`);
  return stdout.split('\n').slice(-5).join('\n');
}

async function withNode<T>(port: number, use: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
  r.on('error', () => undefined);
  try {
    return await use(r);
  } finally {
    r.disconnect();
  }
}

/** The master port serving `slot` now (asked of any running node). */
async function ownerOf(cluster: RedisClusterHandle, slot: number): Promise<number> {
  for (const n of cluster.nodes) {
    if (!n.running) continue;
    const ranges = await withNode(n.port, (r) => r.cluster('SLOTS'));
    const port = ranges.find(([from, to]) => slot >= from && slot <= to)?.[2]?.[1];
    if (port) return port;
  }
  throw new Error(`no owner of slot ${slot}`);
}

/**
 * Moves `slot` from its master to `to` as redis-cli --cluster reshard does: IMPORTING on the target, MIGRATING on the
 * source, MIGRATE of its keys `batch` at a time (a pause between batches, as a big slot or a slow link would take),
 * then SETSLOT NODE on the target, the source and the others. Returns the keys moved.
 */
async function moveSlot(cluster: RedisClusterHandle, slot: number, to: number, opts: { batch?: number; pauseMs?: number } = {}) {
  const from = await ownerOf(cluster, slot);
  if (from === to) return 0;
  const [fromId, toId] = await Promise.all([from, to].map((p) => withNode(p, (r) => r.cluster('MYID'))));
  await withNode(to, (r) => r.cluster('SETSLOT', slot, 'IMPORTING', fromId!));
  let moved = 0;
  await withNode(from, async (r) => {
    await r.cluster('SETSLOT', slot, 'MIGRATING', toId!);
    for (;;) {
      const keys = (await r.cluster('GETKEYSINSLOT', slot, opts.batch ?? 10)) as string[];
      if (keys.length === 0) break;
      await r.migrate('127.0.0.1', to, '', 0, 5000, 'REPLACE', 'KEYS', ...keys);
      moved += keys.length;
      if (opts.pauseMs) await sleep(opts.pauseMs);
    }
  });
  // The other masters learn it too (a replica refuses SETSLOT; it learns from its master).
  const others: number[] = [];
  for (const n of cluster.nodes)
    if (n.running && n.port !== from && n.port !== to && ((await withNode(n.port, (r) => r.role())) as unknown[])[0] === 'master')
      others.push(n.port);
  for (const port of [to, from, ...others]) await withNode(port, (r) => r.cluster('SETSLOT', slot, 'NODE', toId!));
  return moved;
}

/** The slots a store's work lives in: its own, its events and dynamo-writes queue shards', its work-set shard's. */
function slotsOf(fleet: Fleet, store: string) {
  const p = fleet.prefix;
  const shard = storeShard(store, fleet.queueShards);
  return {
    store: keySlot(`${p}:{${store}}:`),
    events: keySlot(`{${p}:events:${shard}}`),
    writes: keySlot(`{${p}:dynamo-writes:${shard}}`),
    work: keySlot(`${p}:{${p}:w${shard}}:`),
  };
}

interface Poll {
  answers: number;
  statuses: Record<string, number>;
  /** Per store and metric: every value answered, in order. */
  seen: Map<string, number[]>;
  errors: string[];
}

/** Polls each store's all-time totals through the query API until `stop()`. */
function pollQueries(fleet: Fleet, stop: () => boolean): { poll: Poll; done: Promise<void> } {
  const poll: Poll = { answers: 0, statuses: {}, seen: new Map(), errors: [] };
  const url = fleet.app('query-api').url;
  const done = (async () => {
    while (!stop()) {
      for (const s of fleet.stores) {
        try {
          const res = await fetch(`${url}/v1/series?entity=store&range=allTime&granularity=total`, {
            headers: { authorization: `Bearer ${fleet.keys[s.id]!.read}` },
            signal: AbortSignal.timeout(15_000),
          });
          const body = await res.text();
          poll.statuses[res.status] = (poll.statuses[res.status] ?? 0) + 1;
          if (!res.ok) {
            if (res.status !== 503 && poll.errors.length < 20) poll.errors.push(`${s.id}: ${res.status} ${body.slice(0, 300)}`);
            continue;
          }
          poll.answers++;
          const totals = (JSON.parse(body) as { totals: Record<string, unknown> }).totals;
          for (const [metric, v] of Object.entries(totals)) {
            if (!/Count$/.test(metric) || typeof v !== 'number') continue;
            const k = `${s.id} ${metric}`;
            const list = poll.seen.get(k) ?? [];
            list.push(v);
            poll.seen.set(k, list);
          }
        } catch (err) {
          if (poll.errors.length < 20) poll.errors.push(`${s.id}: ${(err as Error).message}`);
        }
      }
      await sleep(100);
    }
  })();
  return { poll, done };
}

/** Every polled count never above the final one and never falling: a wrong number answered during the moves. */
function wrongAnswers(poll: Poll, finalTotals: Map<string, number>): string[] {
  const out: string[] = [];
  for (const [k, list] of poll.seen) {
    const final = finalTotals.get(k);
    list.forEach((v, i) => {
      if (final !== undefined && v > final) out.push(`${k}: answered ${v}, above the final ${final}`);
      if (i > 0 && v < list[i - 1]!) out.push(`${k}: answered ${v} after ${list[i - 1]}`);
    });
  }
  return out;
}

async function finalTotals(fleet: Fleet): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const s of fleet.stores) {
    const res = await fetch(`${fleet.app('query-api').url}/v1/series?entity=store&range=allTime&granularity=total`, {
      headers: { authorization: `Bearer ${fleet.keys[s.id]!.read}` },
    });
    const totals = ((await res.json()) as { totals: Record<string, unknown> }).totals;
    for (const [metric, v] of Object.entries(totals)) if (typeof v === 'number') out.set(`${s.id} ${metric}`, v);
  }
  return out;
}

async function runUnderLoad(
  fleet: Fleet,
  disturb: (fleet: Fleet, loadDone: () => boolean) => Promise<void>,
  load: { events: number; rate: number } = { events: EVENTS, rate: RATE },
) {
  const { stats, accepted, done } = loadFleet(fleet, {
    load: { seed: 41, products: 150, visitors: 800, maxEvents: load.events, batchSize: [20, 120], lateShare: 0.1 },
    retry: { deadlineMs: 120_000, maxDelayMs: 500 },
    rate: load.rate,
    concurrency: 6,
    duplicateShare: 0.05,
  });
  let loadOver = false;
  void done.finally(() => (loadOver = true));
  const progress = setInterval(
    () => log(`sent ${stats.eventsSent}, accepted ${stats.accepted}, retries ${JSON.stringify(stats.retries)}`),
    5_000,
  );
  const q = pollQueries(fleet, () => loadOver);
  try {
    await sleep(2_000);
    await disturb(fleet, () => loadOver);
    await withDeadline(done, 180_000, 'the load done');
  } finally {
    clearInterval(progress);
    loadOver = true;
    await q.done;
  }
  const expected = expectedCounts(accepted, fleet.rules, fleet.zones);
  await withDeadline(waitForDrain(fleet, { timeoutMs: 180_000 }), 190_000, 'the fleet drained').catch(async (err) => {
    log(`not drained: ${JSON.stringify(await backlog(fleet))}`);
    for (const a of fleet.apps) log(`${a.name}:\n${a.handle.process.output().split('\n').slice(-30).join('\n')}`);
    throw err;
  });
  const table = await checkTable(fleet, expected);
  const query = await checkQueryApi(fleet, fleet.app('query-api').url, expected);
  const failed = await failedJobs(fleet);
  const wrong = wrongAnswers(q.poll, await finalTotals(fleet));
  log(
    `sent ${stats.eventsSent}, accepted ${stats.accepted}, retries ${JSON.stringify(stats.retries)}; table cells ${table.cells}, ` +
      `mismatches ${table.mismatches}; query values ${query.compared}, mismatches ${query.mismatches.length}; polled answers ` +
      `${q.poll.answers}, statuses ${JSON.stringify(q.poll.statuses)}, wrong ${wrong.length}; failed jobs ${failed.length}`,
  );
  for (const x of [...table.samples, ...query.mismatches, ...wrong, ...q.poll.errors, ...failed, ...stats.edgeMismatches].slice(0, 30))
    log(`  ${x}`);
  for (const a of fleet.apps) {
    const lines = a.handle.process
      .output()
      .split('\n')
      .filter((l) => /"level":(40|50|60)/.test(l));
    log(`${a.name}: ${lines.length} warn/error lines${lines.length ? `, e.g.\n    ${lines.slice(0, 6).join('\n    ')}` : ''}`);
  }
  return { stats, table, query, failed, wrong, poll: q.poll, events: load.events };
}

function expectExact(r: Awaited<ReturnType<typeof runUnderLoad>>) {
  expect(r.stats.edgeMismatches).toEqual([]);
  expect(r.stats.gaveUp).toBe(0);
  expect(r.stats.accepted).toBeGreaterThan(r.events * 0.9);
  expect(r.table.samples).toEqual([]);
  expect(r.table.mismatches).toBe(0);
  expect(r.query.mismatches).toEqual([]);
  expect(r.wrong).toEqual([]);
  expect(r.poll.errors).toEqual([]);
  expect(r.failed).toEqual([]);
}

describe('a Redis Cluster resharded under load', () => {
  it(
    'slots of the busiest store and of its queue and work-set shards moved back and forth while events stream in',
    async () => {
      const fleet = await startFleet({
        stores: DEMO_STORES,
        rules: everyBucketRules(),
        clusterMasters: 3,
        queueShards: SHARDS,
        replicas: { 'bucket-aggregator': 2, 'dynamo-writer': 2 },
      });
      try {
        const cluster = fleet.cluster!;
        const masters = cluster.nodes.map((n) => n.port);
        let moves = 0;
        let keysMoved = 0;
        let slotCount = 0;
        const r = await runUnderLoad(
          fleet,
          async (f, loadDone) => {
            const slots = [...new Set(f.stores.flatMap((s) => Object.values(slotsOf(f, s.id))))];
            slotCount = slots.length;
            log(`slots to move: ${slots.join(', ')}`);
            // Every slot moved at least once, then again while the load lasts.
            for (let round = 0; (round === 0 || !loadDone()) && round < 20; round++) {
              for (const slot of slots) {
                const from = await ownerOf(cluster, slot);
                const to = masters[(masters.indexOf(from) + 1) % masters.length]!;
                keysMoved += await moveSlot(cluster, slot, to, { batch: 10, pauseMs: 5 });
                moves++;
                if (loadDone() && round > 0) break;
              }
            }
            log(`${moves} slot moves, ${keysMoved} keys migrated`);
          },
          LONG ? { events: 15_000, rate: 300 } : { events: 3_000, rate: 300 },
        );
        expect(slotCount).toBeGreaterThan(3);
        expect(moves).toBeGreaterThanOrEqual(slotCount);
        expectExact(r);
      } finally {
        await fleet.stop();
      }
    },
    RUN_MS,
  );
});

const WAIT = { REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: '500' };

/** The node's role as ROLE says it: `master`, or `slave` with its master's port. */
async function roleOf(port: number): Promise<{ role: string; master?: number; link?: string }> {
  const role = (await withNode(port, (r) => r.role())) as unknown[];
  return role[0] === 'slave' ? { role: 'slave', master: Number(role[2]), link: String(role[3]) } : { role: String(role[0]) };
}

/** A replica of master `port` whose link is up, among the running nodes and `extra`. */
async function replicaOf(nodes: readonly RedisHandle[], port: number): Promise<RedisHandle | undefined> {
  for (const n of nodes) {
    if (!n.running) continue;
    const r = await roleOf(n.port).catch(() => undefined);
    if (r?.role === 'slave' && r.master === port && r.link === 'connected') return n;
  }
  return undefined;
}

describe.runIf(LONG)('a Redis Cluster failed over by hand under load (REDIS_WAIT_REPLICAS=1)', () => {
  it(
    'CLUSTER FAILOVER of the masters of the busiest stores and their queue shards, then of a replica added under load',
    async () => {
      const fleet = await startFleet({
        stores: DEMO_STORES,
        rules: everyBucketRules(),
        clusterMasters: 3,
        clusterReplicas: 1,
        queueShards: SHARDS,
        appEnv: { collector: WAIT, 'bucket-aggregator': WAIT, 'dynamo-writer': WAIT },
      });
      const added: RedisHandle[] = [];
      try {
        const cluster = fleet.cluster!;
        let failovers = 0;
        const r = await runUnderLoad(fleet, async (f, loadDone) => {
          const slots = [...new Set(['LAX1', 'KTM1'].flatMap((s) => [slotsOf(f, s).store, slotsOf(f, s).events]))];
          /** CLUSTER FAILOVER on a replica of the master of `slot`; waits until it serves the slot and the old master is its replica. */
          const failover = async (slot: number, nodes: readonly RedisHandle[]) => {
            const master = await ownerOf(cluster, slot);
            const replica = await waitFor(() => replicaOf(nodes, master), { timeoutMs: 30_000, message: `a replica of :${master}` });
            const t0 = Date.now();
            // The masters refuse a second vote about one master within twice cluster-node-timeout, and a manual
            // failover not done in 5 s is aborted: the operator asks again.
            for (let tries = 1; ; tries++) {
              await withNode(replica.port, (c) => c.cluster('FAILOVER'));
              const done = await waitFor(async () => (await ownerOf(cluster, slot)) === replica.port, {
                timeoutMs: 10_000,
                message: `:${replica.port} serving ${slot}`,
              }).then(
                () => true,
                (err: unknown) => (tries < 6 ? false : Promise.reject(err)),
              );
              if (done) break;
              log(`slot ${slot}: CLUSTER FAILOVER on :${replica.port} not done in 10 s (try ${tries}); again`);
            }
            await replicaInSync(`redis://127.0.0.1:${master}`);
            failovers++;
            log(`slot ${slot}: :${master} -> :${replica.port} in ${Date.now() - t0} ms`);
          };
          for (let round = 0; !loadDone() && round < 3; round++)
            for (const slot of slots) {
              if (loadDone()) break;
              await failover(slot, cluster.nodes);
              await sleep(500);
            }
          // A new node, made a replica of the master of LAX1's slot while the load runs, then failed over to.
          const slot = slotsOf(f, 'LAX1').store;
          const node = await startClusterNode({ appendfsync: 'always' });
          added.push(node);
          const master = await ownerOf(cluster, slot);
          const masterId = (await withNode(master, (c) => c.cluster('MYID'))) as string;
          await withNode(node.port, (c) => c.cluster('MEET', '127.0.0.1', master));
          await waitFor(async () => ((await withNode(node.port, (c) => c.cluster('NODES'))) as string).includes(masterId), {
            timeoutMs: 30_000,
            message: 'the new node knows the master',
          });
          await waitFor(
            () =>
              withNode(node.port, (c) => c.cluster('REPLICATE', masterId)).then(
                () => true,
                () => false,
              ),
            { timeoutMs: 30_000, message: 'the new node a replica' },
          );
          await replicaInSync(node.url);
          log(`:${node.port} added as a replica of :${master}`);
          await failover(slot, [node]);
          // Then a crash: the master of LAX1's events queue shard SIGKILLed, its replica promoted by the cluster.
          const events = slotsOf(f, 'LAX1').events;
          const victimPort = await ownerOf(cluster, events);
          const victim = [...cluster.nodes, ...added].find((n) => n.port === victimPort)!;
          const t0 = Date.now();
          await victim.kill('SIGKILL');
          await waitFor(async () => (await ownerOf(cluster, events).catch(() => victimPort)) !== victimPort, {
            timeoutMs: 60_000,
            intervalMs: 200,
            message: 'the replica of the SIGKILLed master promoted',
          });
          log(`master :${victimPort} of slot ${events} SIGKILLed; replica promoted after ${Date.now() - t0} ms`);
          await victim.restart();
          await replicaInSync(victim.url);
        });
        expect(failovers).toBeGreaterThan(3);
        expectExact(r);
      } finally {
        await fleet.stop();
        for (const n of added) await n.stop();
      }
    },
    RUN_MS,
  );
});

describe.runIf(LONG)('a master added and removed under load (redis-cli --cluster add-node, rebalance, del-node)', () => {
  it(
    'scale out to a 4th master (the busiest slots moved to it), then drain it and remove it, while events stream in',
    async () => {
      const fleet = await startFleet({
        stores: DEMO_STORES,
        rules: everyBucketRules(),
        clusterMasters: 3,
        queueShards: SHARDS,
        replicas: { 'bucket-aggregator': 2, 'dynamo-writer': 2 },
      });
      const added: RedisHandle[] = [];
      try {
        const cluster = fleet.cluster!;
        const seed = `127.0.0.1:${cluster.nodes[0]!.port}`;
        const r = await runUnderLoad(
          fleet,
          async (f) => {
            const node = await startClusterNode({ appendfsync: 'always' });
            added.push(node);
            await redisCli(['add-node', `127.0.0.1:${node.port}`, seed]);
            const id = (await withNode(node.port, (c) => c.cluster('MYID'))) as string;
            await waitFor(async () => ((await withNode(cluster.nodes[0]!.port, (c) => c.cluster('NODES'))) as string).includes(id), {
              timeoutMs: 30_000,
              message: 'the cluster knows the new node',
            });
            await sleep(2_000); // the new node's config spread to every node (rebalance refuses a cluster that disagrees)
            await redisCli(['rebalance', seed, '--cluster-use-empty-masters', '--cluster-yes']);
            // The busy slots too: every store's, its queue shards' and work-set shard's.
            const slots = [...new Set(f.stores.flatMap((s) => Object.values(slotsOf(f, s.id))))];
            let keys = 0;
            for (const slot of slots) keys += await moveSlot(cluster, slot, node.port, { batch: 10 });
            log(`${slots.length} busy slots moved to :${node.port} (${keys} keys)`);
            await sleep(2_000);
            // Scale in: drain the new master and remove it.
            await redisCli(['rebalance', seed, '--cluster-weight', `${id}=0`, '--cluster-yes']);
            await redisCli(['del-node', seed, id]);
          },
          { events: 24_000, rate: 300 },
        );
        expectExact(r);
      } finally {
        await fleet.stop();
        for (const n of added) await n.stop();
      }
    },
    RUN_MS,
  );
});

describe.runIf(LONG)('a reshard under load with REDIS_WAIT_REPLICAS=1 (a replica each)', () => {
  it(
    'slots of the busiest stores and their shards moved back and forth while the apps wait for replicas',
    async () => {
      const fleet = await startFleet({
        stores: DEMO_STORES,
        rules: everyBucketRules(),
        clusterMasters: 3,
        clusterReplicas: 1,
        queueShards: SHARDS,
        appEnv: { collector: WAIT, 'bucket-aggregator': WAIT, 'dynamo-writer': WAIT },
      });
      try {
        const cluster = fleet.cluster!;
        let moves = 0;
        const r = await runUnderLoad(
          fleet,
          async (f, loadDone) => {
            const masters = (await Promise.all(cluster.nodes.map(async (n) => ((await roleOf(n.port)).role === 'master' ? [n.port] : []))))
              .flat()
              .sort();
            const slots = [...new Set(f.stores.flatMap((s) => Object.values(slotsOf(f, s.id))))];
            for (let round = 0; !loadDone() && round < 20; round++)
              for (const slot of slots) {
                const from = await ownerOf(cluster, slot);
                await moveSlot(cluster, slot, masters[(masters.indexOf(from) + 1) % masters.length]!, { batch: 10, pauseMs: 5 });
                moves++;
                if (loadDone()) break;
              }
            log(`${moves} slot moves`);
          },
          { events: 15_000, rate: 300 },
        );
        expect(moves).toBeGreaterThan(5);
        expectExact(r);
      } finally {
        await fleet.stop();
      }
    },
    RUN_MS,
  );
});
