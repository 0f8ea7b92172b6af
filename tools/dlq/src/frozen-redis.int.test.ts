import { setTimeout as delay } from 'node:timers/promises';
import { connectToolRedis } from '@tally/stack';
import type { RedisHandle } from '@tally/testing';
import { useRedis } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';
import { runDlqCli } from './cli';
import { io } from './test-fixtures';

// A Redis that stops answering once the tool is connected (frozen, or a network that drops its packets): without a
// command timeout every command of the tool waited on it for as long as the connection lived, with no output (an
// `npm start` stack's redis-server SIGSTOPped during `dlq purge`: silent until SIGCONT; never resumed, until TCP gives
// up, hours). Each command now fails after TOOL_REDIS_DEADLINE_MS, and the tool stops with exit 1.

let server: RedisHandle;
useRedis((_redis, s) => void (server = s));

describe('a Redis that stops answering after the tool connected', () => {
  it('stops the command with an error (exit 1) rather than waiting on it for ever', async () => {
    const tool = await connectToolRedis({ REDIS_URL: server.url, KEY_PREFIX: 't', QUEUE_SHARDS: 1 });
    const c = io();
    await server.kill('SIGSTOP');
    try {
      const run = runDlqCli(['list'], { queues: tool.queues, dedupeWindowMs: 86_400_000 }, c.io);
      // Far past the bound the tool keeps for a Redis unreachable at start (10 s, TOOL_REDIS_DEADLINE_MS).
      const settled = await Promise.race([run, delay(40_000, 'still waiting' as const)]);
      expect(settled).toBe(1);
      expect(c.err.join('\n')).toMatch(/^tally: /);
    } finally {
      await server.kill('SIGCONT');
      await tool.close();
    }
  });
});
