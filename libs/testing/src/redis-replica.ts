import { Redis } from 'ioredis';
import { startRedis, type RedisHandle, type StartRedisOptions } from './redis';
import { waitFor } from './wait';

export interface RedisWithReplica {
  master: RedisHandle;
  replica: RedisHandle;
  /** Stops both, the replica first (a master shutting down waits for its replicas to catch up). */
  stop(): Promise<void>;
}

/**
 * A redis-server (`opts`) and a replica of it, returned once the replica is in sync. The master starts a full sync
 * at once (Redis waits 5 s by default before a diskless one), so a test can also re-attach a replica it detached.
 */
export async function startRedisWithReplica(opts: StartRedisOptions = {}): Promise<RedisWithReplica> {
  const master = await startRedis({ ...opts, args: [...(opts.args ?? []), '--repl-diskless-sync-delay', '0'] });
  let replica: RedisHandle | undefined;
  try {
    replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    await replicaInSync(replica.url);
    // The replica has loaded the master's data; the master counts it for WAIT once it reads the replica's first ACK.
    const m = testRedis(master.url);
    try {
      await waitFor(async () => /^slave0:.*state=online/m.test(await m.info('replication')), { message: 'the replica online' });
    } finally {
      m.disconnect();
    }
  } catch (err) {
    await replica?.stop();
    await master.stop();
    throw err;
  }
  const r = replica;
  return {
    master,
    replica: r,
    stop: async () => {
      await r.stop();
      await master.stop();
    },
  };
}

/** A connection for a test's own reads and writes: no retries, and errors ignored (tests kill servers). */
export function testRedis(url: string): Redis {
  const r = new Redis(url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  return r;
}

/** Waits until the replica at `url` has its link to its master up (after REPLICAOF, a full or partial sync). */
export async function replicaInSync(url: string): Promise<void> {
  const r = testRedis(url);
  try {
    await waitFor(async () => /^master_link_status:up\r?$/m.test(await r.info('replication')), { message: `the replica ${url} in sync` });
  } finally {
    r.disconnect();
  }
}
