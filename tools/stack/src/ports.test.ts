import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort as findFreePort } from '@tally/testing';
import { choosePort, isPortFree, StackError } from './stores';

const servers: net.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

const app = (name: string, defaultPort: number, portVariable: string) => ({ name, defaultPort, portVariable });

async function occupy(host?: string): Promise<number> {
  const s = net.createServer();
  servers.push(s);
  await new Promise<void>((r) => s.listen({ port: 0, host }, r));
  return (s.address() as net.AddressInfo).port;
}

describe('ports', () => {
  it('sees a port taken on the loopback only', async () => {
    const port = await occupy('127.0.0.1');
    expect(await isPortFree(port)).toBe(false);
    expect(await isPortFree(await findFreePort())).toBe(true);
  });

  it('keeps a free default, moves off a taken one and says so', async () => {
    const free = await findFreePort();
    expect(await choosePort(app('collector', free, 'COLLECTOR_PORT'), undefined)).toEqual({ port: free });
    const taken = await occupy();
    const moved = await choosePort(app('collector', taken, 'COLLECTOR_PORT'), undefined);
    expect(moved.port).not.toBe(taken);
    expect(moved.note).toBe(`port ${taken} for collector is taken, using ${moved.port} instead (set COLLECTOR_PORT to choose)`);
  });

  it('does not hand out a port reserved for another service', async () => {
    const free = await findFreePort();
    const choice = await choosePort(app('writer', free, 'WRITER_PORT'), undefined, new Set([free]));
    expect(choice.port).not.toBe(free);
  });

  it('refuses an explicit port that is taken', async () => {
    const taken = await occupy();
    const err = await choosePort(app('query-api', 7402, 'QUERY_API_PORT'), taken).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StackError);
    expect((err as StackError).code).toBe('TALLY_ERR_PORT_TAKEN');
    expect((err as StackError).message).toBe(
      `QUERY_API_PORT=${taken}: port ${taken} for query-api is already in use; free it or choose another`,
    );
  });
});
