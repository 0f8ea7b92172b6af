import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { aofWritten, ServiceStartError, startRedis, waitFor, type RedisHandle } from './index';

const started: RedisHandle[] = [];
const clients: Redis[] = [];

async function start(opts?: Parameters<typeof startRedis>[0]): Promise<RedisHandle> {
  const r = await startRedis(opts);
  started.push(r);
  return r;
}

function connect(url: string): Redis {
  // No reconnect storms across a restart: a fresh client per phase.
  const c = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  clients.push(c);
  return c;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect();
  await Promise.all(started.splice(0).map((r) => r.stop()));
});

describe('startRedis', () => {
  it('runs redis-server with AOF, no RDB snapshots and noeviction on a random port', async () => {
    const r = await start();
    expect(r.url).toBe(`redis://127.0.0.1:${r.port}`);
    expect(r.port).not.toBe(6379);
    const c = connect(r.url);
    expect(await c.ping()).toBe('PONG');
    expect(await c.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
    expect(await c.config('GET', 'appendfsync')).toEqual(['appendfsync', 'everysec']);
    expect(await c.config('GET', 'save')).toEqual(['save', '']);
    expect(await c.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
    expect(await c.config('GET', 'dir')).toEqual(['dir', r.dir]);
    expect(r.running).toBe(true);
  });

  it('gives each server its own port and dir', async () => {
    const [a, b] = await Promise.all([start(), start()]);
    expect(a!.port).not.toBe(b!.port);
    expect(a!.dir).not.toBe(b!.dir);
  });

  it('keeps writes that reached the AOF across SIGKILL + restart (AOF, appendfsync everysec)', async () => {
    const r = await start();
    const before = connect(r.url);
    for (let i = 0; i < 100; i++) await before.incrby('counter', i);
    await before.hset('row', { 'D123.OrderCount': '7' });
    // everysec writes a command to the AOF before answering it, except while the last background fsync is still
    // running (a busy disk): then Redis keeps it in its AOF buffer for up to 2 s and answers anyway, and a SIGKILL
    // loses it (README "Outages and recovery"). Wait until the buffer is written, as it is on an idle disk.
    await waitFor(async () => aofWritten(await before.info('persistence')), {
      timeoutMs: 5_000,
      message: 'the AOF buffer written to the file',
    });
    const oldPid = r.pid;

    await r.kill();
    expect(r.running).toBe(false);
    await expect(before.ping()).rejects.toThrow();

    await r.restart();
    expect(r.pid).not.toBe(oldPid);
    const after = connect(r.url);
    expect(await after.get('counter')).toBe('4950');
    expect(await after.hget('row', 'D123.OrderCount')).toBe('7');
  });

  it('restart() of a running server shuts it down gracefully and keeps data on the same port', async () => {
    const r = await start({ appendfsync: 'always' });
    const port = r.port;
    await connect(r.url).set('k', 'v');
    await r.restart();
    expect(r.port).toBe(port);
    expect(await connect(r.url).get('k')).toBe('v');
  });

  it('loses everything on SIGKILL + restart without AOF', async () => {
    const r = await start({ appendonly: false });
    await connect(r.url).set('k', 'v');
    await r.kill();
    await r.restart();
    expect(await connect(r.url).get('k')).toBeNull();
  });

  it('SIGSTOP freezes and SIGCONT thaws it', async () => {
    const r = await start();
    // No command timeout here: on a slow machine a running server may take any time to answer.
    const c = new Redis(r.url, { maxRetriesPerRequest: 0 });
    // The probe times out, but only ever asks while the server is frozen, when no wait is long enough.
    const probe = new Redis(r.url, {
      commandTimeout: 200,
      maxRetriesPerRequest: 0,
      lazyConnect: true,
      enableReadyCheck: false,
      disableClientInfo: true,
    });
    clients.push(c, probe);
    expect(await c.ping()).toBe('PONG');
    await probe.connect();
    await r.kill('SIGSTOP');
    let answered = false;
    const frozen = c.ping().finally(() => (answered = true));
    await expect(probe.ping()).rejects.toThrow(/timed out/i);
    expect(answered).toBe(false);
    await r.kill('SIGCONT');
    // Thawed, it answers what it was asked while frozen, and then new commands.
    expect(await frozen).toBe('PONG');
    expect(await c.ping()).toBe('PONG');
  });

  it('stop() removes its temp dir but never a dir it was given', async () => {
    const r = await startRedis();
    expect(existsSync(r.dir)).toBe(true);
    await r.stop();
    expect(existsSync(r.dir)).toBe(false);
    await r.stop(); // idempotent
    await expect(r.restart()).rejects.toThrow(/stopped for good/);

    const dir = mkdtempSync(join(tmpdir(), 'tally-given-'));
    try {
      const given = await startRedis({ dir });
      expect(given.dir).toBe(dir);
      await connect(given.url).set('k', 'v');
      await given.stop();
      expect(existsSync(dir)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails with the server output when redis-server cannot start', async () => {
    const err = await startRedis({ dir: '/nonexistent/tally' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceStartError);
    expect((err as Error).message).toMatch(/exited during start-up; output:\n[\s\S]*\/nonexistent\/tally/);
  });

  it('uses the given port and says when it is taken', async () => {
    const a = await start();
    const err = await startRedis({ port: a.port }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceStartError);
    expect((err as Error).message).toMatch(new RegExp(`^redis-server on port ${a.port} exited during start-up`));
  });

  it('says how to install redis-server when it is not on PATH', async () => {
    await expect(startRedis({ binary: 'tally-no-redis-server' })).rejects.toThrow(
      'tally-no-redis-server is not on PATH; install it with: apt-get install redis-server',
    );
  });
});
