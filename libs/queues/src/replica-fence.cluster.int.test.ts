import { keySlot } from '@tally/key-layout';
import { startClusterNode, startRedisCluster, testRedis, waitFor, type RedisClusterHandle, type RedisHandle } from '@tally/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createRedisConnection, type RedisConnection } from './connection';
import { createReplicaFence } from './replica-fence';

// Waits on fence keys of one Redis Cluster master share its WAITs, as on one server (the aggregator's `t:{S}:f`).

let cluster: RedisClusterHandle;
let redis: RedisConnection;
let master: RedisHandle;
/** Six fence keys in six hash slots, all served by `master`. */
const keys: string[] = [];
const TIMEOUT_MS = 1_000;

/** Runs `fn` on a connection of its own to `node`. */
const on = async <T>(node: RedisHandle, fn: (r: ReturnType<typeof testRedis>) => Promise<T>): Promise<T> => {
  const r = testRedis(node.url);
  try {
    return await fn(r);
  } finally {
    r.disconnect();
  }
};
/** How many WAITs `master` has run since the last CONFIG RESETSTAT. */
const waits = () => on(master, async (r) => Number(/^cmdstat_wait:calls=(\d+)/m.exec(await r.info('commandstats'))?.[1] ?? 0));

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicas: 1 });
  redis = createRedisConnection({ REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds });
  master = await cluster.masterOf('t:{S0}:f');
  for (let i = 0; keys.length < 6; i++) if ((await cluster.masterOf(`t:{S${i}}:f`)) === master) keys.push(`t:{S${i}}:f`);
}, 120_000);
afterAll(async () => {
  redis?.disconnect();
  await cluster?.stop();
});

it('sends one WAIT for the keys of one master that wait together, and one for a call given several', async () => {
  const fence = createReplicaFence(redis, 1, 10_000, []);
  await fence.wait(keys[0]!, 'warm-up', fence.mark());
  await on(master, (r) => r.config('RESETSTAT'));
  // Six calls in one tick: the first sends its fence at once, the five made while it is in flight share the next.
  const mark = fence.mark();
  await Promise.all(keys.map((k) => fence.wait(k, k, mark)));
  expect(await waits()).toBe(2);
  await fence.wait(keys, 'all six', fence.mark());
  expect(await waits()).toBe(3);
  expect(Math.min(...(await on(master, (r) => Promise.all(keys.map((k) => r.pttl(k))))))).toBeGreaterThan(0);
});

it('fails every wait on keys of one master within twice REDIS_WAIT_TIMEOUT_MS when its replica lags, not one after another', async () => {
  const fence = createReplicaFence(redis, 1, TIMEOUT_MS, []);
  await fence.wait(keys[0]!, 'warm-up', fence.mark());
  const roles = await Promise.all(cluster.nodes.map(async (n) => ({ n, role: await on(n, (r) => r.role() as Promise<unknown[]>) })));
  const replica = roles.find(({ role }) => role[0] === 'slave' && role[2] === master.port)!.n;
  await on(master, (r) => r.config('RESETSTAT'));
  await replica.kill('SIGSTOP');
  try {
    const mark = fence.mark();
    const failed = await Promise.all(
      keys.map((k) =>
        fence.wait(k, k, mark).then(
          () => 'passed',
          (err: Error) => err.message,
        ),
      ),
    );
    for (const message of failed) expect(message).toMatch(/^0 of 1 Redis replicas acknowledged /);
    // Two WAITs one after the other (the first call's, then the one the other five share): at most twice the timeout
    // for every call. One per key, queued on the master's one connection, took six times it.
    expect(await waits()).toBe(2);
  } finally {
    await replica.kill('SIGCONT');
  }
});

it('fences the importing master too while the slot migrates (a write answered ASK is made there), and fails once the fence key moved', async () => {
  // The aggregator's and the collector's data connection, apart from the fence's.
  const data = createRedisConnection(
    { REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds },
    { maxRetriesPerRequest: null },
  );
  const fenceKey = 't:{M}:f';
  const slot = keySlot(fenceKey);
  const slotKeys = (n: RedisHandle) => on(n, (r) => r.cluster('GETKEYSINSLOT', slot, 100) as Promise<string[]>);
  const fence = createReplicaFence(redis, 1, TIMEOUT_MS, [data]);
  /** The wait's outcome: 'passed', or its error's message. */
  const outcome = (what: string) =>
    fence.wait(fenceKey, what, fence.mark()).then(
      () => 'passed',
      (err: Error) => err.message,
    );
  try {
    // A busy store: its fence key written by an earlier wait, on the slot's master (again while the data
    // connection's first node connections still settle: a close meanwhile fails a wait).
    for (let i = 0; (await outcome('warm-up')) !== 'passed'; i++) expect(i).toBeLessThan(20);
    const source = await cluster.masterOf(fenceKey);
    const roles = await Promise.all(cluster.nodes.map(async (n) => ({ n, role: await on(n, (r) => r.role() as Promise<unknown[]>) })));
    const target = roles.find(({ n, role }) => role[0] === 'master' && n !== source)!.n;
    const targetReplica = roles.find(({ role }) => role[0] === 'slave' && role[2] === target.port)!.n;
    const [sourceId, targetId] = await Promise.all([source, target].map((n) => on(n, (r) => r.cluster('MYID') as Promise<string>)));

    // The slot in the middle of a reshard from source to target, its keys not yet moved (the fence key among them).
    await on(target, (r) => r.cluster('SETSLOT', slot, 'IMPORTING', sourceId!));
    await on(source, (r) => r.cluster('SETSLOT', slot, 'MIGRATING', targetId!));
    const record = 't:idem:{M}:batch-1';
    try {
      // A new key of the store (an idempotency record, say): the migrating master lacks it and answers ASK, so the
      // write is made on the importing master.
      expect(await data.set(record, 'fingerprint', 'NX')).toBe('OK');
      expect(await slotKeys(target)).toEqual([record]);
      expect(await slotKeys(source)).toContain(fenceKey);
      // Both masters' replicas follow: the wait passes, and leaves no key of its own on the importing master.
      expect(await outcome('the idempotency record')).toBe('passed');
      expect(await slotKeys(target)).toEqual([record]);

      // The importing master's replica acknowledges nothing: no replica holds the record, so the wait fails (it
      // passed on the migrating master's replica alone).
      await targetReplica.kill('SIGSTOP');
      try {
        expect(await outcome('the idempotency record')).toMatch(/^0 of 1 Redis replicas acknowledged the idempotency record /);
      } finally {
        await targetReplica.kill('SIGCONT');
      }

      // The fence key itself moved: no write of the fence is made on the migrating master, whose WAIT then covers
      // nothing of the writes still made there, so the wait fails until the migration ends.
      await on(source, (r) => r.migrate('127.0.0.1', target.port, '', 0, 5_000, 'KEYS', fenceKey));
      expect(await outcome('the batch')).toMatch(/^the wait for Redis replicas to acknowledge the batch failed: ASK /);
    } finally {
      // The reshard undone: the keys made on the importing master deleted there, the slot stable on the source.
      await on(target, async (r) => {
        for (const key of await slotKeys(target)) await r.pipeline().asking().del(key).exec();
      });
      for (const n of [source, target]) await on(n, (r) => r.cluster('SETSLOT', slot, 'STABLE'));
    }
  } finally {
    data.disconnect();
  }
});

it('fences a new, empty master that imports the slot (a scale-out), which the slot map does not name', async () => {
  // A master with no slot yet, and its replica, joined to the cluster: CLUSTER SLOTS (the fence connection's slot
  // map, refreshed or not) does not name it.
  const added = [await startClusterNode(), await startClusterNode()];
  const [target, targetReplica] = added as [RedisHandle, RedisHandle];
  const data = createRedisConnection(
    { REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds },
    { maxRetriesPerRequest: null },
  );
  const fenceKey = 't:{N}:f';
  const slot = keySlot(fenceKey);
  const slotKeys = (n: RedisHandle) => on(n, (r) => r.cluster('GETKEYSINSLOT', slot, 100) as Promise<string[]>);
  const fence = createReplicaFence(redis, 1, TIMEOUT_MS, [data]);
  const outcome = (what: string) =>
    fence.wait(fenceKey, what, fence.mark()).then(
      () => 'passed',
      (err: Error) => err.message,
    );
  let source: RedisHandle | undefined;
  try {
    for (const n of added) await on(cluster.nodes[0]!, (r) => r.cluster('MEET', '127.0.0.1', n.port));
    const targetId = await on(target, (r) => r.cluster('MYID') as Promise<string>);
    await waitFor(async () => (await on(targetReplica, (r) => r.cluster('NODES') as Promise<string>)).includes(targetId), {
      timeoutMs: 30_000,
      message: 'the new nodes known to each other',
    });
    await on(targetReplica, (r) => r.cluster('REPLICATE', targetId));
    await waitFor(async () => /^master_link_status:up/m.test(await on(targetReplica, (r) => r.info('replication'))), {
      timeoutMs: 30_000,
      message: "the new master's replica in sync",
    });
    for (let i = 0; (await outcome('warm-up')) !== 'passed'; i++) expect(i).toBeLessThan(20);
    source = await cluster.masterOf(fenceKey);
    const sourceId = await on(source, (r) => r.cluster('MYID') as Promise<string>);
    await on(target, (r) => r.cluster('SETSLOT', slot, 'IMPORTING', sourceId));
    await on(source, (r) => r.cluster('SETSLOT', slot, 'MIGRATING', targetId));
    // A new key of the store is made on the new master (ASK); the wait covers it there too, and leaves no key of its own.
    const record = 't:idem:{N}:batch-1';
    expect(await data.set(record, 'fingerprint', 'NX')).toBe('OK');
    expect(await slotKeys(target)).toEqual([record]);
    expect(await outcome('the idempotency record')).toBe('passed');
    expect(await slotKeys(target)).toEqual([record]);
    // Its replica acknowledging nothing, the wait fails: the fence did reach the new master.
    await targetReplica.kill('SIGSTOP');
    try {
      expect(await outcome('the idempotency record')).toMatch(/^0 of 1 Redis replicas acknowledged the idempotency record /);
    } finally {
      await targetReplica.kill('SIGCONT');
    }
  } finally {
    data.disconnect();
    // The reshard undone and the new nodes gone (stopped: the others' node tables keep them, failed, no slot of theirs).
    if (source) await on(source, (r) => r.cluster('SETSLOT', slot, 'STABLE'));
    for (const n of added) await n.stop();
  }
}, 60_000);
