import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureTallyTable, startDynalite } from './dynalite';
import { ping, redisServerArgs, redisServerVersion } from './redis-server';
import { findFreePort } from './ports';

const dir = mkdtempSync(path.join(os.tmpdir(), 'tally-stores-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('redis-server', () => {
  it('says how to get it when it is not installed', async () => {
    await expect(redisServerVersion('/nonexistent/redis-server')).rejects.toMatchObject({
      code: 'TALLY_ERR_REDIS_NOT_INSTALLED',
      message: expect.stringMatching(/apt-get install redis-server.*brew install redis.*REDIS_URL/),
    });
  });

  it('runs with AOF every second, noeviction and no RDB snapshots', () => {
    const args = redisServerArgs(1234, '/d');
    const opt = (name: string) => args[args.indexOf(name) + 1];
    expect([opt('--port'), opt('--dir'), opt('--appendonly'), opt('--appendfsync'), opt('--maxmemory-policy'), opt('--save')]).toEqual([
      '1234',
      '/d',
      'yes',
      'everysec',
      'noeviction',
      '',
    ]);
  });

  it('ping is false where nothing listens', async () => {
    expect(await ping(await findFreePort())).toBe(false);
  });
});

describe('dynalite', () => {
  it('creates the table once and keeps it across restarts', async () => {
    const first = await startDynalite(path.join(dir, 'dynamo'), 0);
    expect(await ensureTallyTable(first.endpoint, 'us-east-1', 'tally')).toBe(true);
    expect(await ensureTallyTable(first.endpoint, 'us-east-1', 'tally')).toBe(false);
    await first.close();
    const second = await startDynalite(path.join(dir, 'dynamo'), 0);
    try {
      expect(await ensureTallyTable(second.endpoint, 'us-east-1', 'tally')).toBe(false);
    } finally {
      await second.close();
    }
  });
});
