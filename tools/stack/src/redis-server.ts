import { execFile } from 'node:child_process';
import net from 'node:net';
import { redisNotInstalled, StackError } from './errors';

/** `redis-server --version`, or StackError TALLY_ERR_REDIS_NOT_INSTALLED when it is not on PATH. */
export function redisServerVersion(bin = 'redis-server'): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, ['--version'], { timeout: 10_000 }, (err, stdout) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(code === 'ENOENT' || code === 'EACCES' ? redisNotInstalled() : new StackError('TALLY_ERR_REDIS_START', `${bin} --version failed: ${err.message}`));
        return;
      }
      resolve(/v=(\S+)/.exec(stdout)?.[1] ?? stdout.trim());
    });
  });
}

/**
 * The arguments BullMQ's production guide asks for: AOF fsynced every second, no eviction,
 * no RDB snapshots; bound to the loopback on `port`, files in `dir`.
 */
export function redisServerArgs(port: number, dir: string): string[] {
  return [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--appendonly', 'yes',
    '--appendfsync', 'everysec',
    '--maxmemory-policy', 'noeviction',
    '--save', '',
    '--daemonize', 'no',
    '--loglevel', 'warning',
  ];
}

/** One PING over a raw socket: true on +PONG. */
export function ping(port: number, host = '127.0.0.1', timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/** Polls PING until Redis answers. `gaveUp()` lets the caller stop early (redis-server exited). */
export async function waitForRedis(port: number, timeoutMs: number, gaveUp: () => boolean = () => false): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await ping(port)) return;
    if (gaveUp()) throw new StackError('TALLY_ERR_REDIS_START', `redis-server exited during start-up (see its lines above)`);
    if (Date.now() > until) throw new StackError('TALLY_ERR_REDIS_START', `redis-server did not answer PING on port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
