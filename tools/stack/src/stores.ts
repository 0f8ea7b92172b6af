import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { freePort } from '@tally/testing';

/** An error that stops `npm start` (or an operator tool) before anything runs, with one line saying what to do. */
export class StackError extends Error {
  constructor(
    readonly code: `TALLY_ERR_${string}`,
    message: string,
  ) {
    super(message);
  }
}

/** `redis-server --version`, or StackError TALLY_ERR_REDIS_NOT_INSTALLED when it is not on PATH. */
export async function redisServerVersion(bin = 'redis-server'): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(bin, ['--version'], { timeout: 10_000 });
    return /v=(\S+)/.exec(stdout)?.[1] ?? stdout.trim();
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException;
    if (code !== 'ENOENT' && code !== 'EACCES') throw new StackError('TALLY_ERR_REDIS_START', `${bin} --version failed: ${message}`);
    const how =
      'install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) or set REDIS_URL to a running Redis';
    throw new StackError('TALLY_ERR_REDIS_NOT_INSTALLED', `redis-server was not found on PATH: ${how}`);
  }
}

const canListen = (port: number, host?: string) =>
  new Promise<boolean>((resolve) => {
    const server = net.createServer().unref();
    // No IPv6 on this machine: the dual-stack probe says nothing, the IPv4 probe decides.
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL'));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });

/** True when nothing listens on `port`, on any address nor on the loopback. */
export const isPortFree = async (port: number) => (await canListen(port)) && (await canListen(port, '127.0.0.1'));

/** The port an app listens on: its `portVariable`'s (which must be free), else the default, else a free one, said in a note. */
export async function choosePort(
  { name: what, defaultPort, portVariable: variable }: { name: string; defaultPort: number; portVariable: string },
  explicit: number | undefined,
  reserved: ReadonlySet<number> = new Set(),
): Promise<{ port: number; note?: string }> {
  const wanted = explicit ?? defaultPort;
  if (!reserved.has(wanted) && (await isPortFree(wanted))) return { port: wanted };
  if (explicit !== undefined) {
    const message = `${variable}=${explicit}: port ${explicit} for ${what} is already in use; free it or choose another`;
    throw new StackError('TALLY_ERR_PORT_TAKEN', message);
  }
  let port = await freePort();
  while (reserved.has(port)) port = await freePort();
  return { port, note: `port ${defaultPort} for ${what} is taken, using ${port} instead (set ${variable} to choose)` };
}
