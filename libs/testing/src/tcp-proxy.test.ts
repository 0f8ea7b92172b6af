import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterAll, describe, expect, it } from 'vitest';
import { startTcpProxy } from './tcp-proxy';

/** A TCP server on 127.0.0.1 that answers every line with `name:line`. */
async function echoServer(name: string): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.on('data', (d) => s.write(`${name}:${d.toString()}`)).on('error', () => {}));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Sends `text` on `socket` and resolves with the first answer. */
async function ask(socket: Socket, text: string): Promise<string> {
  socket.write(text);
  const [data] = (await once(socket, 'data')) as [Buffer];
  return data.toString();
}

const servers: Server[] = [];
afterAll(() => servers.forEach((s) => s.close()));

describe('startTcpProxy', () => {
  it('forwards to its target; retarget() cuts open connections and sends new ones to the new target', async () => {
    const [a, b] = await Promise.all([echoServer('a'), echoServer('b')]);
    servers.push(a.server, b.server);
    const proxy = await startTcpProxy(a.port);
    expect(proxy.url).toBe(`redis://127.0.0.1:${proxy.port}`);
    try {
      const first = connect(proxy.port, '127.0.0.1');
      expect(await ask(first, 'x')).toBe('a:x');
      const closed = once(first, 'close');
      proxy.retarget(b.port);
      await closed;
      expect(proxy.target).toBe(b.port);
      const second = connect(proxy.port, '127.0.0.1');
      expect(await ask(second, 'y')).toBe('b:y');
      second.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('closes a connection at once when its target is down, as a refused one would be', async () => {
    const down = await echoServer('gone');
    down.server.close();
    const proxy = await startTcpProxy(down.port);
    try {
      const s = connect(proxy.port, '127.0.0.1');
      s.on('error', () => {});
      await once(s, 'close');
    } finally {
      await proxy.close();
    }
  });
});
