import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, redisAnswers, redisServerArgs, startDynalite } from '@tally/testing';
import { createDynamoClient, ensureTable } from '@tally/dynamo';
import { redisServerVersion } from './stores';

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
    const args = redisServerArgs({ port: 1234, dir: '/d' });
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

  it('does not answer where nothing listens', async () => {
    expect(await redisAnswers(await freePort())).toBe(false);
  });
});

/** What npm start does once dynalite runs: ensureTable, through a client of its own. True when it created the table. */
async function ensureTallyTable(endpoint: string, region: string, table: string): Promise<boolean> {
  const client = createDynamoClient({ endpoint, region });
  try {
    return (await ensureTable(client, table, { timeoutMs: 30_000 })).created;
  } finally {
    client.destroy();
  }
}

describe('dynalite', () => {
  it('creates the table once and keeps it across restarts', async () => {
    const first = await startDynalite({ path: path.join(dir, 'dynamo') });
    expect(await ensureTallyTable(first.endpoint, 'us-east-1', 'tally')).toBe(true);
    expect(await ensureTallyTable(first.endpoint, 'us-east-1', 'tally')).toBe(false);
    await first.stop();
    const second = await startDynalite({ path: path.join(dir, 'dynamo') });
    try {
      expect(await ensureTallyTable(second.endpoint, 'us-east-1', 'tally')).toBe(false);
    } finally {
      await second.stop();
    }
  });
});
