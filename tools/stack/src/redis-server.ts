import { execFile } from 'node:child_process';
import { redisAnswers } from '@tally/testing';
import { redisNotInstalled, StackError } from './errors';

/** `redis-server --version`, or StackError TALLY_ERR_REDIS_NOT_INSTALLED when it is not on PATH. */
export function redisServerVersion(bin = 'redis-server'): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, ['--version'], { timeout: 10_000 }, (err, stdout) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          code === 'ENOENT' || code === 'EACCES'
            ? redisNotInstalled()
            : new StackError('TALLY_ERR_REDIS_START', `${bin} --version failed: ${err.message}`),
        );
        return;
      }
      resolve(/v=(\S+)/.exec(stdout)?.[1] ?? stdout.trim());
    });
  });
}

/** Polls until Redis answers PING. `gaveUp()` lets the caller stop early (redis-server exited). */
export async function waitForRedis(port: number, timeoutMs: number, gaveUp: () => boolean = () => false): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await redisAnswers(port)) return;
    if (gaveUp()) throw new StackError('TALLY_ERR_REDIS_START', `redis-server exited during start-up (see its lines above)`);
    if (Date.now() > until)
      throw new StackError('TALLY_ERR_REDIS_START', `redis-server did not answer PING on port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
