import { spawn } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { freePort, REPO_ROOT, startRedis, startSentinel, type RedisHandle, type SentinelHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOOL_REDIS_DEADLINE_MS } from './tool-redis';

/** The deadline, plus the time a process takes to start (tsx compiling the sources it loads). */
const BOUND_MS = TOOL_REDIS_DEADLINE_MS + 10_000;

/**
 * connectToolRedis(target), as an operator command calls it, in a process of its own (it exits): its exit code, what
 * it wrote on stderr, and how long it ran. A process still running after BOUND_MS is killed (signal SIGKILL).
 */
function connect(target: Record<string, unknown>) {
  const config = { REDIS_URL: 'redis://127.0.0.1:6379', KEY_PREFIX: 'tally', QUEUE_SHARDS: 1, ...target };
  const script = `const r = await (await import('./tools/stack/src/tool-redis.ts')).connectToolRedis(${JSON.stringify(config)}); await r.close();`;
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT });
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), BOUND_MS);
  return new Promise<{ code: number | null; signal: string | null; err: string; ms: number }>((resolve) =>
    child.once('exit', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, err, ms: Date.now() - started });
    }),
  );
}

/** The one line it must print, as a regex: the target it tried, then why. */
const cannotReach = (target: string, why: string) =>
  new RegExp(`^tally: cannot reach Redis at ${target.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ${why}\\n$`);

describe('connectToolRedis: a Redis it cannot reach', () => {
  it('a Redis Cluster where nothing listens: one line naming the nodes, exit 1, no endless retries', async () => {
    const port = await freePort();
    const r = await connect({ REDIS_CLUSTER_NODES: [{ host: '127.0.0.1', port }] });
    expect(r).toMatchObject({ code: 1, signal: null, err: expect.stringMatching(cannotReach(`cluster 127.0.0.1:${port}`, '\\S.*')) });
    expect(r.ms).toBeLessThan(BOUND_MS);
  });

  it('Sentinels where nothing listens: one line naming the Sentinels and the master, exit 1', async () => {
    const port = await freePort();
    const r = await connect({ REDIS_SENTINELS: [{ host: '127.0.0.1', port }] });
    expect(r).toMatchObject({
      code: 1,
      signal: null,
      err: expect.stringMatching(
        cannotReach(`master mymaster of sentinels 127.0.0.1:${port}`, `failed to connect to sentinel 127\\.0\\.0\\.1:${port}.*`),
      ),
    });
    expect(r.ms).toBeLessThan(BOUND_MS);
  });

  it('a Sentinel that accepts the connection and never answers: it gives up at the deadline', async () => {
    const sockets = new Set<Socket>();
    const silent: Server = createServer((s) => void sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    try {
      const r = await connect({ REDIS_SENTINELS: [{ host: '127.0.0.1', port }] });
      expect(r).toMatchObject({
        code: 1,
        signal: null,
        err: expect.stringMatching(
          cannotReach(`master mymaster of sentinels 127.0.0.1:${port}`, `no answer within ${TOOL_REDIS_DEADLINE_MS / 1000}s`),
        ),
      });
      expect(r.ms).toBeGreaterThanOrEqual(TOOL_REDIS_DEADLINE_MS);
      expect(r.ms).toBeLessThan(BOUND_MS);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  describe('Sentinels that answer', () => {
    let redis: RedisHandle;
    let sentinel: SentinelHandle;
    beforeAll(async () => {
      redis = await startRedis();
      sentinel = await startSentinel({ masterPort: redis.port });
    });
    afterAll(async () => {
      await sentinel?.stop();
      await redis?.stop();
    });

    it('a master name they do not know (REDIS_SENTINEL_MASTER): one line saying so, exit 1', async () => {
      const r = await connect({ REDIS_SENTINELS: [{ host: '127.0.0.1', port: sentinel.port }], REDIS_SENTINEL_MASTER: 'nosuchmaster' });
      expect(r).toMatchObject({
        code: 1,
        signal: null,
        err: expect.stringMatching(
          cannotReach(
            `master nosuchmaster of sentinels 127.0.0.1:${sentinel.port}`,
            `sentinel 127\\.0\\.0\\.1:${sentinel.port} knows no master named "nosuchmaster" \\(REDIS_SENTINEL_MASTER\\)`,
          ),
        ),
      });
      expect(r.ms).toBeLessThan(BOUND_MS);
    });

    it('the master they name: connected', async () => {
      const r = await connect({ REDIS_SENTINELS: [{ host: '127.0.0.1', port: sentinel.port }] });
      expect(r).toMatchObject({ code: 0, signal: null, err: '' });
    });
  });
});
