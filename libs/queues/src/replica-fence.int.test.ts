import {
  replicaInSync,
  startRedisCluster,
  startRedisWithReplica,
  testRedis,
  waitFor,
  type RedisHandle,
  type RedisWithReplica,
} from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisConnection } from './connection';
import { createReplicaFence, ReplicasBehindError, warnOnTooFewReplicas } from './replica-fence';

// The wait for Redis replicas shared by the collector, the client and the dynamo-writer, against a real replica.

let pair: RedisWithReplica;
let master: RedisHandle;
let replica: RedisHandle;
const connections: Redis[] = [];
const connect = (url: string) => {
  const c = testRedis(url);
  connections.push(c);
  return c;
};
/** How many WAITs the server has run since the last CONFIG RESETSTAT. */
const waits = async (r: Redis) => Number(/^cmdstat_wait:calls=(\d+)/m.exec(await r.info('commandstats'))?.[1] ?? 0);

beforeAll(async () => {
  pair = await startRedisWithReplica();
  ({ master, replica } = pair);
});
afterAll(async () => {
  for (const c of connections) c.disconnect();
  await pair?.stop();
});

describe('createReplicaFence', () => {
  it('resolves once the replica holds what was written before it, and refuses in time when it does not', async () => {
    const m = connect(master.url);
    const r = connect(replica.url);
    const fence = createReplicaFence(connect(master.url), 1, 200);
    await m.set('k', 'before');
    await fence('q:{s0}:fence', 'the batch');
    expect(await r.get('k')).toBe('before');
    expect(await r.pttl('q:{s0}:fence')).toBeGreaterThan(0);

    // The replica stops following (as one whose link broke): the write stays on the master alone.
    await r.replicaof('NO', 'ONE');
    try {
      await m.set('k', 'after');
      const started = performance.now();
      await expect(fence('q:{s0}:fence', 'the batch')).rejects.toThrowError(
        new ReplicasBehindError('0 of 1 Redis replicas acknowledged the batch within 200 ms'),
      );
      expect(performance.now() - started).toBeGreaterThanOrEqual(190);
      expect([await m.get('k'), await r.get('k')]).toEqual(['after', 'before']);
    } finally {
      await r.replicaof('127.0.0.1', master.port);
      await replicaInSync(replica.url);
    }
    await fence('q:{s0}:fence', 'the batch');
    expect(await r.get('k')).toBe('after');
  });

  it('shares one WAIT between the calls made while another is in flight (group commit)', async () => {
    const m = connect(master.url);
    const fence = createReplicaFence(connect(master.url), 1, 1_000);
    await m.config('RESETSTAT');
    // Fifty writes, then fifty calls in one tick: the first sends its fence at once; the 49 made while it is in flight
    // share the next one. (Calls that each follow their own write's reply come when the replies do: under load those
    // arrive over more than one WAIT, and a third WAIT is then right, so the count would depend on the machine.)
    await Promise.all(Array.from({ length: 50 }, (_, i) => m.set(`g${i}`, String(i))));
    await Promise.all(Array.from({ length: 50 }, (_, i) => fence(`q:{s${i % 3}}:fence`, `batch ${i}`)));
    expect(await waits(m)).toBe(2);
    const r = connect(replica.url);
    expect(await r.mget(...Array.from({ length: 50 }, (_, i) => `g${i}`))).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    // Calls one after another each send their own.
    for (let i = 0; i < 3; i++) await fence('q:{s0}:fence', 'one batch');
    expect(await waits(m)).toBe(5);
  });

  it('refuses with ReplicasBehindError, naming the cause, when the wait itself fails', async () => {
    const gone = connect(master.url);
    gone.disconnect();
    const fence = createReplicaFence(gone, 1, 100);
    const err = await fence('q:{s0}:fence', 'the outbox').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReplicasBehindError);
    expect((err as Error).message).toMatch(/^the wait for Redis replicas to acknowledge the outbox failed: /);
  });

  it('on a Redis Cluster, follows the fence key to the master a failover promoted', async () => {
    const cluster = await startRedisCluster({ masters: 3, replicas: 1 });
    const conn = createRedisConnection(
      { REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds },
      { maxRetriesPerRequest: null },
    );
    conn.on('error', () => {});
    try {
      for (const n of cluster.nodes.slice(3)) await replicaInSync(n.url);
      const fence = createReplicaFence(conn, 1, 2_000);
      const key = 'q:{STORE1}:fence';
      await fence(key, 'a write before the failover');
      const old = await cluster.masterOf(key);
      // Its replica takes over (CLUSTER FAILOVER: the old master becomes the new one's replica, nothing lost).
      const roles = await Promise.all(cluster.nodes.map(async (n) => ({ n, role: (await connect(n.url).role()) as unknown[] })));
      const heir = roles.find(({ role }) => role[0] === 'slave' && role[2] === old.port)!.n;
      await connect(heir.url).cluster('FAILOVER');
      await waitFor(async () => (await cluster.masterOf(key)) === heir, { timeoutMs: 30_000, message: 'the replica promoted' });
      await replicaInSync(old.url);
      // The connection's slots still name the old master, now a replica: its MOVED is followed, not fatal.
      await fence(key, 'a write after the failover');
    } finally {
      conn.disconnect();
      await cluster.stop();
    }
  }, 120_000);

  it('warns when the connection is ready and Redis has fewer replicas than asked for', async () => {
    const warnings: string[] = [];
    for (const wanted of [1, 2]) {
      const c = new Redis(master.url, { lazyConnect: true });
      connections.push(c);
      warnOnTooFewReplicas(c, wanted, (msg) => warnings.push(`${wanted}: ${msg}`));
      await c.connect();
      await c.ping(); // answered after the check's INFO
    }
    await waitFor(() => warnings.length > 0, { message: 'a warning' });
    expect(warnings).toEqual([
      '2: REDIS_WAIT_REPLICAS is 2, but a Redis master has 1 replica connected: every wait for replicas times out until enough are',
    ]);
  });
});
