import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

export interface TcpProxy {
  /** `redis://127.0.0.1:<port>` (the scheme given). */
  readonly url: string;
  readonly port: number;
  /** Where new connections go now. */
  readonly target: number;
  /** Sends new connections to `port` on 127.0.0.1 and cuts every open one, as a failover that moves an address does. */
  retarget(port: number): void;
  close(): Promise<void>;
}

/**
 * A TCP forwarder on 127.0.0.1 to a port on 127.0.0.1: the one address clients keep while what stands behind it
 * changes (a Redis failover behind a virtual IP or a DNS name, in a test). A connection to a target that is down is
 * accepted and closed at once, as a refused one would be.
 */
export async function startTcpProxy(targetPort: number, scheme = 'redis'): Promise<TcpProxy> {
  let target = targetPort;
  const open = new Set<Socket>();
  const track = (s: Socket) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
  };
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    track(client);
    track(upstream);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const cut = () => {
    for (const s of open) s.destroy();
  };
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    get target() {
      return target;
    },
    retarget(p) {
      target = p;
      cut();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        cut();
      }),
  };
}
