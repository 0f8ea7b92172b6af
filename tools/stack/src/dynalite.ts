import { mkdirSync } from 'node:fs';
import type http from 'node:http';
import { createRequire } from 'node:module';
import type net from 'node:net';
import { createDynamoClient, ensureTable } from '@tally/dynamo';

type DynaliteFactory = (options: { path?: string; createTableMs?: number }) => http.Server;

export interface DynaliteHandle {
  endpoint: string;
  port: number;
  /** Stops accepting requests, drops idle connections and closes the LevelDB files. */
  close(timeoutMs?: number): Promise<void>;
}

/** Runs dynalite in this process on 127.0.0.1:`port` (0 = any free port), storing tables under `path`. */
export async function startDynalite(path: string, port: number): Promise<DynaliteHandle> {
  mkdirSync(path, { recursive: true });
  // dynalite is CommonJS without types.
  const dynalite = createRequire(import.meta.url)('dynalite') as DynaliteFactory;
  const server = dynalite({ path, createTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actual = (server.address() as net.AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${actual}`,
    port: actual,
    close: (timeoutMs = 5_000) =>
      (closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeAllConnections();
      })),
  };
}

/** Creates the Tally table at `endpoint` unless it exists. True when it was created. */
export async function ensureTallyTable(endpoint: string, region: string, table: string): Promise<boolean> {
  const client = createDynamoClient({ endpoint, region });
  try {
    return (await ensureTable(client, table, { timeoutMs: 30_000 })).created;
  } finally {
    client.destroy();
  }
}
