import { startRedisCluster, testRedis, type RedisClusterHandle, type RedisHandle } from '@tally/testing';
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
