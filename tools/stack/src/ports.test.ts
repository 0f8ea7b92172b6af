import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort as findFreePort } from '@tally/testing';
import { choosePort, isPortFree, StackError } from './stores';

const servers: net.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

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
    expect(await choosePort('collector', free, undefined, 'COLLECTOR_PORT')).toEqual({ port: free });
    const taken = await occupy();
    const moved = await choosePort('collector', taken, undefined, 'COLLECTOR_PORT');
    expect(moved.port).not.toBe(taken);
    expect(moved.note).toBe(`port ${taken} for collector is taken, using ${moved.port} instead (set COLLECTOR_PORT to choose)`);
  });

  it('does not hand out a port reserved for another service', async () => {
    const free = await findFreePort();
    const choice = await choosePort('writer', free, undefined, 'WRITER_PORT', new Set([free]));
    expect(choice.port).not.toBe(free);
  });

  it('refuses an explicit port that is taken', async () => {
    const taken = await occupy();
    const err = await choosePort('query-api', 7402, taken, 'QUERY_API_PORT').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StackError);
    expect((err as StackError).code).toBe('TALLY_ERR_PORT_TAKEN');
    expect((err as StackError).message).toBe(
      `QUERY_API_PORT=${taken}: port ${taken} for query-api is already in use; free it or choose another`,
    );
  });
});
