import { execFile } from 'node:child_process';
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
