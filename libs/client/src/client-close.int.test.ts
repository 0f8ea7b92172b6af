import { createServer, type Server } from 'node:net';
import { freePort, startRedis, waitFor } from '@tally/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { createProducerConnection, createTallyClient } from './index';

// What close() leaves behind, counted on the whole process (this file opens nothing else), and onError while every
// Sentinel is down. README: once close() resolves the client holds no socket or timer, Redis down or not (on Redis
// Sentinel and Cluster, ioredis' own timers that it cannot reach go within ~2 s).

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The process's timers and TCP sockets: what keeps it from exiting. */
const held = () => {
  const r = process.getActiveResourcesInfo();
  return { timers: r.filter((x) => x === 'Timeout').length, sockets: r.filter((x) => x === 'TCPSocketWrap').length };
};

/** The timers and sockets the process holds now beyond `before`. */
const beyond = (before: ReturnType<typeof held>) => {
  const now = held();
  return { timers: Math.max(0, now.timers - before.timers), sockets: Math.max(0, now.sockets - before.sockets) };
};

/** Whether the process holds no more timers and sockets than `before`. */
const backTo = (before: ReturnType<typeof held>) => {
  const more = beyond(before);
  return more.timers === 0 && more.sockets === 0;
};

/** `held()` now; once the test is over, waits (at most 10 s) for what it left to go, so the next test counts its own. */
function heldBefore(): ReturnType<typeof held> {
  const before = held();
  cleanups.unshift(async () => void (await waitFor(() => backTo(before), { timeoutMs: 10_000 }).catch(() => undefined)));
  return before;
}

const view = { type: 'view', ts: Date.now() - 60_000, dims: { product: 'P1', visitor: 'V1' } };

describe('@tally/client close() while Redis is frozen (SIGSTOP: the kernel takes the connection, nothing answers)', () => {
  /** A Redis to freeze (`freeze()`), with no socket of startRedis' own checks left open. */
  async function frozenRedis() {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    await waitFor(() => held().sockets === 0, { timeoutMs: 10_000, message: 'no TCP socket open' });
    return {
      url: redis.url,
      freeze: async () => {
        await redis.kill('SIGSTOP');
        cleanups.push(() => redis.kill('SIGCONT'));
      },
    };
  }

  it('frozen before its connection was ready: leaves no socket or timer once close() resolves', async () => {
    const redis = await frozenRedis();
    await redis.freeze();
    const before = heldBefore();
    const c = createTallyClient({ connection: redis.url, readyTimeoutMs: 200 });
    // Its connection is connected (status `connect`) and waits for the answer to its ready check.
    await waitFor(
      async () => String(await c.enqueueEvents('S1', [view]).catch((e: Error) => e.message)).includes('connected, not ready yet'),
      { timeoutMs: 20_000, message: 'the connection connected, not ready' },
    );
    await c.close();
    // The socket ended (FIN) was left to ioredis' disconnectTimeout (2 s) to destroy: a frozen Redis never closes
    // its side.
    expect(beyond(before)).toEqual({ timers: 0, sockets: 0 });
  });

  it('frozen once its connection was ready: close() does not wait for QUIT, and leaves no socket or timer', async () => {
    const redis = await frozenRedis();
    const before = heldBefore();
    const c = createTallyClient({ connection: redis.url, backpressure: false });
    expect((await c.enqueueEvents('S1', [view])).accepted).toBe(1);
    await redis.freeze();
    // QUIT waited for the connection's command timeout (5 s), then the socket was left as above.
    await c.close();
    expect(beyond(before)).toEqual({ timers: 0, sockets: 0 });
  });
});

describe('@tally/client on Redis Sentinel while every Sentinel is down', () => {
  it('tells onError once per outage, not at every round of the Sentinels', async () => {
    heldBefore();
    const sentinel = { host: '127.0.0.1', port: await freePort() }; // nothing listens: every attempt is refused
    // The caller's connection, whose own 'error' events count the rounds; the client's queues re-emit them.
    const conn = createProducerConnection({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_SENTINELS: [sentinel] });
    const attempts: Error[] = [];
    conn.on('error', (e) => attempts.push(e));
    const told: Error[] = [];
    const c = createTallyClient({ connection: conn, onError: (e) => told.push(e) });
    cleanups.push(
      () => conn.disconnect(),
      () => c.close(),
    );
    await waitFor(() => attempts.length >= 10, { timeoutMs: 20_000, message: 'ten failed rounds of the Sentinels' });
    // ioredis' SentinelConnector names its next delay in the message ("… Retrying from scratch after 10ms.", 20ms, …
    // up to 1000ms): each round was a distinct error, told again.
    expect(new Set(attempts.map((e) => e.message)).size).toBeGreaterThan(1);
    expect(told.map((e) => e.message)).toEqual([attempts[0]!.message]);
  });

  it('close() ends the rounds of the Sentinels: no socket left, no Sentinel connection after it resolves', async () => {
    // A "Sentinel" that takes each connection and drops it at once: down, and each attempt is counted.
    let accepted = 0;
    const server: Server = createServer((s) => {
      accepted++;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as { port: number }).port;

    const before = heldBefore();
    const told: Error[] = [];
    const c = createTallyClient({
      connection: { REDIS_URL: 'redis://127.0.0.1:6379', REDIS_SENTINELS: `127.0.0.1:${port}` },
      onError: (e) => told.push(e),
    });
    // One Sentinel connection a round; between two, the connector waits (10 ms more each round, up to 1 s).
    await waitFor(() => accepted >= 5, { timeoutMs: 20_000, message: 'five failed rounds of the Sentinel' });
    await c.close();
    expect(beyond(before).sockets).toBe(0);
    const acceptedAtClose = accepted;
    const toldAtClose = told.length;
    // ioredis' timers that cannot be reached (its wait before the next round; the 2 s disconnect timers of its
    // connections to the Sentinels) go by themselves. The wait used to end in one more Sentinel connection.
    await waitFor(() => backTo(before), { timeoutMs: 10_000, message: 'what it held to go' });
    expect({ connectionsAfterClose: accepted - acceptedAtClose, toldAfterClose: told.length - toldAtClose }).toEqual({
      connectionsAfterClose: 0,
      toldAfterClose: 0,
    });
  });
});
