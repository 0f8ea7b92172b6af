import { freePort, redisTlsConfig, selfSignedTls, startRedis, startSentinel, type RedisHandle, type SentinelHandle } from '@tally/testing';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { closeConnection, createRedisConnection, serverOf } from './connection';

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
