import {
  freePort,
  redisTlsConfig,
  selfSignedTls,
  startRedis,
  startSentinel,
  waitFor,
  type RedisHandle,
  type SentinelHandle,
} from '@tally/testing';
import { createServer, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { SentinelConnector, type Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { closeConnection, createRedisConnection, QUIT_TIMEOUT_MS, serverOf } from './connection';

// Redis Sentinel targets: the Sentinels' password, and TLS that a rediss:// REDIS_URL asks for.

let master: RedisHandle;
let sentinel: SentinelHandle;

beforeAll(async () => {
  master = await startRedis();
  sentinel = await startSentinel({ masterPort: master.port, password: 'sentinel-secret' });
});
afterAll(async () => {
  await sentinel?.stop();
  await master?.stop();
});

describe('createRedisConnection with REDIS_SENTINELS', () => {
  const target = () => ({ REDIS_URL: 'redis://127.0.0.1', REDIS_SENTINELS: [{ host: '127.0.0.1', port: sentinel.port }] });

  it('asks Sentinels that have a password with REDIS_SENTINEL_PASSWORD, and reaches the master they name', async () => {
    const conn = createRedisConnection({ ...target(), REDIS_SENTINEL_PASSWORD: 'sentinel-secret' }) as Redis;
    try {
      await conn.set('k', 'v');
      expect(await conn.get('k')).toBe('v');
      expect(Number(/^tcp_port:(\d+)/m.exec(await conn.info('server'))?.[1])).toBe(master.port);
    } finally {
      await closeConnection(conn);
    }
  });

  it('refuses a Connector of the caller’s: the Sentinel connection uses its own', () => {
    class Mine extends SentinelConnector {}
    expect(() =>
      createRedisConnection(target(), { lazyConnect: true, Connector: Mine as unknown as RedisOptions['Connector'] }),
    ).toThrowError(/^a Connector option cannot be given with REDIS_SENTINELS/);
  });

  it('without it, fails to connect with the Sentinel’s NOAUTH', async () => {
    const conn = createRedisConnection(target(), { lazyConnect: true, sentinelRetryStrategy: () => null }) as Redis;
    conn.on('error', () => {});
    try {
      await expect(conn.connect()).rejects.toThrowError(/NOAUTH/);
    } finally {
      conn.disconnect();
    }
  });

  it('with a rediss:// REDIS_URL, reaches a TLS master through a TLS Sentinel; with redis://, uses no TLS', async () => {
    // Both servers take TLS on a port of their own (the plain one answers the launchers' PING); the Sentinel reaches
    // the master by TLS too (tls-replication) and names its TLS port. A plain connection to either TLS port fails.
    const tls = selfSignedTls();
    const tlsPort = await freePort();
    const args = redisTlsConfig(tls, tlsPort).flatMap((line) => line.split(' ').map((w, i) => (i === 0 ? `--${w}` : w)));
    const tlsMaster = await startRedis({ args });
    const tlsSentinel = await startSentinel({ masterPort: tlsPort, tls });
    // The certificate is self-signed: the client trusts it as its CA (an app: NODE_EXTRA_CA_CERTS, or a public CA).
    const conn = createRedisConnection(
      { REDIS_URL: 'rediss://127.0.0.1', REDIS_SENTINELS: [{ host: '127.0.0.1', port: tlsSentinel.tlsPort! }] },
      { tls: { ca: tls.cert } },
    ) as Redis;
    try {
      await conn.set('k', 'over TLS');
      expect(await conn.get('k')).toBe('over TLS');
      const stream = (conn as unknown as { stream: Socket }).stream;
      expect(stream).toBeInstanceOf(TLSSocket);
      expect(stream.remotePort).toBe(tlsPort);
    } finally {
      conn.disconnect();
      await tlsSentinel.stop();
      await tlsMaster.stop();
    }
    const plain = createRedisConnection(target(), { lazyConnect: true }) as Redis;
    expect(plain.options.enableTLSForSentinelMode).toBe(false);
    expect(plain.options.sentinelTLS).toBeUndefined();
  });
});

describe('createRedisConnection with REDIS_SENTINELS, every Sentinel down', () => {
  it('asks no Sentinel once closed, though closed while it waited between two rounds of them', async () => {
    // A "Sentinel" that takes each connection and drops it at once: down, and each attempt is counted.
    let accepted = 0;
    const server = createServer((s) => {
      accepted++;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    // One round a second: closed in the wait after a round (its error), as closeConnection most often finds it.
    const conn = createRedisConnection(
      { REDIS_URL: 'redis://127.0.0.1', REDIS_SENTINELS: [{ host: '127.0.0.1', port }] },
      { sentinelRetryStrategy: () => 1_000 },
    ) as Redis;
    const errors: string[] = [];
    conn.on('error', (e) => errors.push(e.message));
    try {
      await waitFor(() => errors.length >= 1, { timeoutMs: 20_000, message: 'a failed round of the Sentinels' });
      await closeConnection(conn);
      const [acceptedAtClose, errorsAtClose] = [accepted, errors.length];
      // The wait ends, and with it the connector's loop: it ended in one more Sentinel connection.
      await waitFor(() => conn.status === 'end', { timeoutMs: 10_000, message: 'the connection ended' });
      expect({ connections: accepted - acceptedAtClose, errors: errors.slice(errorsAtClose) }).toEqual({ connections: 0, errors: [] });
    } finally {
      conn.disconnect();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('asks the Sentinels again when it reconnects (ioredis disconnect(true), as on READONLY)', async () => {
    const conn = createRedisConnection({
      REDIS_URL: 'redis://127.0.0.1',
      REDIS_SENTINELS: [{ host: '127.0.0.1', port: sentinel.port }],
      REDIS_SENTINEL_PASSWORD: 'sentinel-secret',
    }) as Redis;
    // ioredis' first round after a reconnect finds no Sentinel (its cursor is past the one that answered): an error.
    conn.on('error', () => {});
    try {
      expect(await conn.ping()).toBe('PONG');
      conn.disconnect(true);
      await waitFor(() => conn.status === 'ready', { timeoutMs: 20_000, message: 'the connection back' });
      expect(await conn.ping()).toBe('PONG');
    } finally {
      await closeConnection(conn);
    }
  });
});

describe('closeConnection', () => {
  it('on a Redis that answers, QUITs: what was sent before is answered first', async () => {
    const conn = createRedisConnection({ REDIS_URL: master.url }) as Redis;
    const quit = vi.spyOn(conn, 'quit');
    expect(await conn.ping()).toBe('PONG');
    const sent = conn.set('closed-with-quit', 'v');
    await closeConnection(conn);
    expect(await sent).toBe('OK');
    expect(quit).toHaveBeenCalledTimes(1);
    const other = createRedisConnection({ REDIS_URL: master.url }) as Redis;
    try {
      expect(await other.get('closed-with-quit')).toBe('v');
    } finally {
      await closeConnection(other);
    }
  });

  it(`on a frozen Redis (SIGSTOP), waits ${QUIT_TIMEOUT_MS} ms for QUIT, not the command timeout, and leaves no socket open`, async () => {
    const frozen = await startRedis();
    // A command timeout longer than the test's: QUIT waited for it.
    const ready = createRedisConnection({ REDIS_URL: frozen.url }, { commandTimeout: 600_000 }) as Redis;
    ready.on('error', () => {});
    let connecting: Redis | undefined;
    try {
      expect(await ready.ping()).toBe('PONG');
      await frozen.kill('SIGSTOP');
      // The kernel takes a new connection: connected, its ready check never answered.
      connecting = createRedisConnection({ REDIS_URL: frozen.url }, { commandTimeout: 600_000 }) as Redis;
      connecting.on('error', () => {});
      await waitFor(() => connecting!.status === 'connect', { timeoutMs: 10_000, message: 'connected, not ready' });
      for (const conn of [ready, connecting]) {
        const stream = conn.stream;
        await closeConnection(conn);
        // Its socket was ended (FIN) and left to ioredis' disconnectTimeout (2 s): a frozen Redis never closes its side.
        expect({ status: conn.status, closed: stream.closed }).toEqual({ status: 'end', closed: true });
      }
    } finally {
      connecting?.disconnect();
      await frozen.kill('SIGCONT');
      await frozen.stop();
    }
  });
});

describe('serverOf', () => {
  it("names a connection's server by its run_id, asked once per life of the connection, and again after it reconnects", async () => {
    const other = await startRedis();
    const open = (url: string) => createRedisConnection({ REDIS_URL: url }) as Redis;
    const [a, b, c] = [open(master.url), open(master.url), open(other.url)];
    a.on('error', () => {});
    try {
      const info = vi.spyOn(a, 'info');
      // INFO server calls (ioredis' own ready check asks INFO without a section).
      const asked = () => info.mock.calls.filter((call) => (call as unknown[])[0] === 'server').length;
      const [ida, idb, idc] = await Promise.all([a, b, c].map((r) => serverOf(r, 'k')));
      expect(ida).toMatch(/^[0-9a-f]{40}$/);
      expect(idb).toBe(ida);
      expect(idc).not.toBe(ida);
      expect(await serverOf(a, 'k')).toBe(ida);
      expect(asked()).toBe(1);
      // The server cuts `a`; ioredis reconnects, and the next call asks again.
      const closed = new Promise((resolve) => a.once('close', resolve));
      await b.client('KILL', 'ID', String(await a.client('ID')));
      await closed;
      expect(await serverOf(a, 'k')).toBe(ida);
      expect(asked()).toBe(2);
    } finally {
      for (const r of [a, b, c]) r.disconnect();
      await other.stop();
    }
  });
});
