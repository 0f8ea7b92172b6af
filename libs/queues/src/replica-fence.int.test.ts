import { keySlot } from '@tally/key-layout';
import { replicaInSync, startRedis, startRedisCluster, waitFor, type RedisHandle } from '@tally/testing';
import { useRedisWithReplica } from '@tally/testing/vitest';
import { Redis, type Cluster } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createRedisConnection } from './connection';
import { createReplicaFence, ReplicasBehindError, warnOnTooFewReplicas } from './replica-fence';

// The wait for Redis replicas shared by the collector, the client and the dynamo-writer, against a real replica.

let master: RedisHandle;
let replica: RedisHandle;
const { connect, disconnectAfter } = useRedisWithReplica((pair) => void ({ master, replica } = pair));
/** How many WAITs the server has run since the last CONFIG RESETSTAT. */
const waits = async (r: Redis) => Number(/^cmdstat_wait:calls=(\d+)/m.exec(await r.info('commandstats'))?.[1] ?? 0);

/** The refusal of a wait whose connections talk to different servers. */
const otherServers = (what: string) => new RegExp(`^${what} and the wait for replicas went to different Redis servers \\(`);
const closedBetween = (what: string) =>
  new ReplicasBehindError(
    `a Redis connection closed between ${what} and the wait for replicas: a failover may have moved it to another server`,
  );
/** An admin connection to the master. */
let admin: Redis | undefined;
const m0 = () => (admin ??= connect(master.url));
/** The id of the master's client connection named `name`. */
const idOf = async (name: string) => Number(new RegExp(`id=(\\d+) [^\\n]*name=${name} `).exec(String(await m0().client('LIST')))?.[1]);
/** A connection that reconnects when the server cuts it, as the apps' do. */
const reconnecting = (url: string) => {
  const c = disconnectAfter(createRedisConnection({ REDIS_URL: url }) as Redis);
  c.on('error', () => {});
  return c;
};

describe('createReplicaFence', () => {
  it('resolves once the replica holds what was written before it, and refuses in time when it does not', async () => {
    const m = connect(master.url);
    const r = connect(replica.url);
    // Waits that pass get time enough on a loaded machine; the one that must time out, 200 ms.
    const fence = createReplicaFence(connect(master.url), 1, 10_000, [m]);
    const short = createReplicaFence(connect(master.url), 1, 200, [m]);
    await m.set('k', 'before');
    await fence.wait('q:{s0}:fence', 'the batch', fence.mark());
    expect(await r.get('k')).toBe('before');
    expect(await r.pttl('q:{s0}:fence')).toBeGreaterThan(0);

    // The replica stops following (as one whose link broke): the write stays on the master alone.
    await r.replicaof('NO', 'ONE');
    try {
      await m.set('k', 'after');
      const started = performance.now();
      await expect(short.wait('q:{s0}:fence', 'the batch', short.mark())).rejects.toThrowError(
        new ReplicasBehindError('0 of 1 Redis replicas acknowledged the batch within 200 ms'),
      );
      expect(performance.now() - started).toBeGreaterThanOrEqual(190);
      expect([await m.get('k'), await r.get('k')]).toEqual(['after', 'before']);
    } finally {
      await r.replicaof('127.0.0.1', master.port);
      await replicaInSync(replica.url);
    }
    await fence.wait('q:{s0}:fence', 'the batch', fence.mark());
    expect(await r.get('k')).toBe('after');
  });

  it('shares one WAIT between the calls made while another is in flight (group commit)', async () => {
    const m = connect(master.url);
    const fence = createReplicaFence(connect(master.url), 1, 1_000, [m]);
    await m.config('RESETSTAT');
    // Fifty writes, then fifty calls in one tick: the first sends its fence at once; the 49 made while it is in flight
    // share the next one. (Calls that each follow their own write's reply come when the replies do: under load those
    // arrive over more than one WAIT, and a third WAIT is then right, so the count would depend on the machine.)
    await Promise.all(Array.from({ length: 50 }, (_, i) => m.set(`g${i}`, String(i))));
    const mark = fence.mark();
    await Promise.all(Array.from({ length: 50 }, (_, i) => fence.wait(`q:{s${i % 3}}:fence`, `batch ${i}`, mark)));
    expect(await waits(m)).toBe(2);
    const r = connect(replica.url);
    expect(await r.mget(...Array.from({ length: 50 }, (_, i) => `g${i}`))).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    // Calls one after another each send their own.
    for (let i = 0; i < 3; i++) await fence.wait('q:{s0}:fence', 'one batch', mark);
    expect(await waits(m)).toBe(5);
  });

  it('refuses with ReplicasBehindError, naming the cause, when the wait itself fails', async () => {
    const gone = connect(master.url);
    gone.disconnect();
    const fence = createReplicaFence(gone, 1, 100, []);
    const err = await fence.wait('q:{s0}:fence', 'the outbox', fence.mark()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReplicasBehindError);
    expect((err as Error).message).toMatch(/^the wait for Redis replicas to acknowledge the outbox failed: /);
  });

  it('fails when a connection it covers closed between the mark and the wait, and passes on a mark taken after', async () => {
    const m = reconnecting(master.url);
    const fence = createReplicaFence(connect(master.url), 1, 1_000, [m]);
    const mark = fence.mark();
    await m.set('k', 'read or written before a cut');
    // The server cuts the data connection (as a failover behind one address does); ioredis reconnects.
    const closed = new Promise((resolve) => m.once('close', resolve));
    await connect(master.url).client('KILL', 'ID', String(await m.client('ID')));
    await closed;
    await expect(fence.wait('q:{s0}:fence', 'the batch', mark)).rejects.toThrowError(closedBetween('the batch'));
    await m.ping();
    await fence.wait('q:{s0}:fence', 'the batch', fence.mark());
  });

  it('fails when a connection it covers talks to another server than its own, though none closed', async () => {
    // An old master cut off from the Sentinels but still up keeps the data connection, while the fence's connection
    // dropped and reconnected to the promoted replica (here: another server, with a replica, from the start).
    const old = await startRedis();
    try {
      const data = connect(old.url);
      const fence = createReplicaFence(connect(master.url), 1, 10_000, [data]);
      const mark = fence.mark();
      await data.set('k', 'written where no replica of the fence server sees it');
      await expect(fence.wait('q:{s0}:fence', 'the batch', mark)).rejects.toThrowError(otherServers('the batch'));
      // On one server, the same fence passes.
      const same = createReplicaFence(connect(master.url), 1, 10_000, [connect(master.url)]);
      await same.wait('q:{s0}:fence', 'the batch', same.mark());
    } finally {
      await old.stop();
    }
  });

  it('fails a fence that its own connection sent again after a reconnect, though the server then answered it', async () => {
    const fenceRedis = reconnecting(master.url);
    await fenceRedis.client('SETNAME', 'fence-under-test');
    const fence = createReplicaFence(fenceRedis, 1, 5_000, []);
    const mark = fence.mark();
    // The master holds every write (CLIENT PAUSE WRITE): the fence's SET, and the WAIT behind it, go unanswered. The
    // server cuts the connection; ioredis sends the whole pipeline again once it has reconnected, and the server,
    // unpaused, answers it: 1 replica, which says nothing of what the first send was to cover had the connection
    // reconnected to another server (a promoted replica).
    await m0().client('PAUSE', 10_000, 'WRITE');
    let outcome: Promise<string>;
    try {
      outcome = fence.wait('q:{s0}:fence', 'the batch', mark).then(
        () => 'passed',
        (err: Error) => err.message,
      );
      await waitFor(async () => /name=fence-under-test .*cmd=set/.test(String(await m0().client('LIST'))), {
        message: 'the fence held by the pause',
      });
      const closed = new Promise((resolve) => fenceRedis.once('close', resolve));
      await m0().client('KILL', 'ID', String(await idOf('fence-under-test')));
      await closed;
    } finally {
      await m0().client('UNPAUSE');
    }
    // Not 'the wait … failed: Command aborted due to connection close': the fence was sent again and answered.
    expect(await outcome).toBe(closedBetween('the batch').message);
  });

  it('on a Redis Cluster, follows the fence key to the master a failover promoted', async () => {
    const cluster = await startRedisCluster({ masters: 3, replicas: 1 });
    const conn = createRedisConnection(
      { REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds },
      { maxRetriesPerRequest: null },
    );
    conn.on('error', () => {});
    // A data connection of its own, which sends nothing between the failover and the wait below.
    const data = createRedisConnection(
      { REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds },
      { maxRetriesPerRequest: null },
    );
    data.on('error', () => {});
    try {
      for (const n of cluster.nodes.slice(3)) await replicaInSync(n.url);
      const fence = createReplicaFence(conn, 1, 2_000, []);
      const key = 'q:{STORE1}:fence';
      await fence.wait(key, 'a write before the failover', fence.mark());
      await data.set('q:{STORE1}:data', 'written before the failover');
      const old = await cluster.masterOf(key);
      // Its replica takes over (CLUSTER FAILOVER: the old master becomes the new one's replica, nothing lost).
      const roles = await Promise.all(cluster.nodes.map(async (n) => ({ n, role: (await connect(n.url).role()) as unknown[] })));
      const heir = roles.find(({ role }) => role[0] === 'slave' && role[2] === old.port)!.n;
      await connect(heir.url).cluster('FAILOVER');
      await waitFor(async () => (await cluster.masterOf(key)) === heir, { timeoutMs: 30_000, message: 'the replica promoted' });
      await replicaInSync(old.url);
      // The connection's slots still name the old master, now a replica: its MOVED is followed, not fatal (a first
      // wait may fail all the same: ioredis replaces its connection to a node whose role changed).
      const passes = (what: string) =>
        fence.wait(key, what, fence.mark()).then(
          () => true,
          () => false,
        );
      await waitFor(() => passes('a write after the failover'), { timeoutMs: 10_000, message: 'a fence after the failover' });
      // The data connection's slots still name the old master: a wait covering it fails, though none of its
      // connections closed, until a command of its own follows the MOVED to the new one.
      const covering = createReplicaFence(conn, 1, 2_000, [data]);
      expect((data as Cluster).slots[keySlot(key)]?.[0]).toBe(`127.0.0.1:${old.port}`);
      await expect(covering.wait(key, 'a write on the old master', covering.mark())).rejects.toThrowError(
        otherServers('a write on the old master'),
      );
      // (Following it, ioredis may replace a node's connection: a wait then fails on the close, and the next passes.)
      const writeAndWait = async () => {
        const mark = covering.mark();
        await data.set('q:{STORE1}:data', 'written after the failover');
        return covering.wait(key, 'a write on the new master', mark).then(
          () => true,
          () => false,
        );
      };
      await waitFor(writeAndWait, { timeoutMs: 10_000, message: 'a wait covering the data connection, on the new master' });
      // A node's connection closes (here: the server cuts it): a wait on a mark taken before fails.
      const mark = fence.mark();
      const closed = new Promise((resolve) => (conn as Cluster).nodes('master').forEach((n) => n.once('close', resolve)));
      await connect(heir.url).client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
      await closed;
      await expect(fence.wait(key, 'a write before the cut', mark)).rejects.toThrowError(closedBetween('a write before the cut'));
      await waitFor(() => passes('a write after the cut'), { timeoutMs: 10_000, message: 'a fence after the cut' });
    } finally {
      conn.disconnect();
      data.disconnect();
      await cluster.stop();
    }
  }, 120_000);

  it('warns when the connection is ready and Redis has fewer replicas than asked for', async () => {
    const warnings: string[] = [];
    for (const wanted of [1, 2]) {
      const c = disconnectAfter(new Redis(master.url, { lazyConnect: true }));
      warnOnTooFewReplicas(c, wanted, (msg) => warnings.push(`${wanted}: ${msg}`));
      await c.connect();
      await c.ping(); // answered after the check's INFO
    }
    await waitFor(() => warnings.length > 0, { message: 'a warning' });
    expect(warnings).toEqual([
      '2: REDIS_WAIT_REPLICAS is 2, but a Redis master has 1 replica connected: every wait for replicas times out until enough are',
    ]);
  });

  it('warns when Redis refuses INFO, which both the replica count and the server check need', async () => {
    const admin = disconnectAfter(new Redis(master.url));
    await admin.acl('SETUSER', 'noinfo', 'on', '>pw', '~*', '&*', '+@all', '-info');
    const warnings: string[] = [];
    const c = disconnectAfter(new Redis(master.url, { lazyConnect: true, username: 'noinfo', password: 'pw', enableReadyCheck: false }));
    warnOnTooFewReplicas(c, 1, (msg) => warnings.push(msg));
    await c.connect();
    await waitFor(() => warnings.length > 0, { message: 'a warning' });
    expect(warnings).toEqual([
      expect.stringMatching(
        /^REDIS_WAIT_REPLICAS is 1, but Redis refuses INFO \(NOPERM .*\): .* allow the Redis user INFO \(ACL \+info\)$/,
      ),
    ]);
  });
});
