import net from 'node:net';
import { freePort } from '@tally/testing';
import { StackError } from './errors';

function canListen(port: number, host?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', (err: NodeJS.ErrnoException) => {
      // No IPv6 on this machine: the dual-stack probe says nothing, the IPv4 probe decides.
      resolve(err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL');
    });
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** True when nothing listens on `port`, on any address nor on the loopback. */
export async function isPortFree(port: number): Promise<boolean> {
  return (await canListen(port)) && (await canListen(port, '127.0.0.1'));
}

export interface PortChoice {
  port: number;
  /** Set when the default port was taken and another one was picked. */
  note?: string;
}

/**
 * The port an app listens on: the one set explicitly (which must be free), else the default,
 * else — when the default is taken — a free one, with a note saying so.
 */
export async function choosePort(
  what: string,
  defaultPort: number,
  explicit: number | undefined,
  variable: string,
  reserved: ReadonlySet<number> = new Set(),
): Promise<PortChoice> {
  if (explicit !== undefined) {
    if (reserved.has(explicit) || !(await isPortFree(explicit))) {
      throw new StackError(
        'TALLY_ERR_PORT_TAKEN',
        `${variable}=${explicit}: port ${explicit} for ${what} is already in use; free it or choose another`,
      );
    }
    return { port: explicit };
  }
  if (!reserved.has(defaultPort) && (await isPortFree(defaultPort))) return { port: defaultPort };
  let port = await freePort();
  while (reserved.has(port)) port = await freePort();
  return { port, note: `port ${defaultPort} for ${what} is taken, using ${port} instead (set ${variable} to choose)` };
}
