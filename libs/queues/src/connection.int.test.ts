import { startRedis, startSentinel, type RedisHandle, type SentinelHandle } from '@tally/testing';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeConnection, createRedisConnection } from './connection';

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

  it('with a rediss:// REDIS_URL, uses TLS to the Sentinels and to the master', () => {
    const conn = createRedisConnection({ ...target(), REDIS_URL: 'rediss://:pw@127.0.0.1' }, { lazyConnect: true }) as Redis;
    expect(conn.options).toMatchObject({ password: 'pw', tls: {}, enableTLSForSentinelMode: true, sentinelTLS: {} });
    const plain = createRedisConnection(target(), { lazyConnect: true }) as Redis;
    expect(plain.options.enableTLSForSentinelMode).toBe(false);
    expect(plain.options.sentinelTLS).toBeUndefined();
  });
});
