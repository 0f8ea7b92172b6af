import { TallyError } from '@tally/key-layout';
import type { Cluster, Redis } from 'ioredis';
import type { RedisConnection } from './connection';

/** Fewer Redis replicas than REDIS_WAIT_REPLICAS acknowledged a write in time: Redis's master holds it, a failover could lose it. */
export class ReplicasBehindError extends TallyError {
  readonly code = 'TALLY_ERR_REDIS_REPLICAS_BEHIND';
}

/**
 * Resolves once `replicas` Redis replicas hold every write Redis had made before the call (on the master of `key`,
 * on a cluster), or throws ReplicasBehindError naming `what` when fewer acknowledged within the timeout or the wait
 * itself failed (Redis unreachable).
 */
export type ReplicaFence = (key: string, what: string) => Promise<void>;

/** How long a fence key lives after the last fence that wrote it. */
const FENCE_TTL_MS = 60_000;
/** MOVED answers one fence follows (slots refreshed each time) before it fails. */
const MAX_REDIRECTIONS = 2;

interface Pending {
  key: string;
  done: Promise<number>;
  settle: { resolve: (acked: number) => void; reject: (err: unknown) => void };
}

/**
 * A wait for Redis replicas (REDIS_WAIT_REPLICAS): a write of a fence key and `WAIT replicas timeoutMs` on the same
 * connection, one pipeline (so on a cluster both go to the key's master). Redis orders the fence after every write it
 * had made before, and WAIT returns once that many replicas have acknowledged the fence, and so everything before it.
 *
 * Group commit: a call made while a fence of its group is in flight waits for the next one, sent when that returns,
 * and every call waiting for it shares it, so one WAIT at a time covers any number of writers. The group is the fence
 * key on a Redis Cluster (its master), and the whole server otherwise (any key of it fences every write).
 *
 * `redis` is a connection of its own: WAIT blocks its connection until it returns.
 */
export function createReplicaFence(redis: RedisConnection, replicas: number, timeoutMs: number): ReplicaFence {
  const groups = new Map<string, { inFlight: boolean; next?: Pending }>();

  /** The replicas that acknowledged one fence of `key`. */
  const fence = async (key: string): Promise<number> => {
    for (let redirections = 0; ; redirections++) {
      const [set, wait] = (await redis.pipeline().set(key, '1', 'PX', FENCE_TTL_MS).wait(replicas, timeoutMs).exec()) ?? [];
      const err = set?.[0] ?? wait?.[0];
      // A failover moved the key's slot to another master. ioredis follows no redirection for a pipeline in which a
      // write succeeded (the WAIT, on the wrong node), nor learns the new owner: refresh its slots, then send again.
      if (redis.isCluster && /^MOVED /.test(set?.[0]?.message ?? '') && redirections < MAX_REDIRECTIONS) {
        await new Promise<void>((resolve) => (redis as Cluster).refreshSlotsCache(() => resolve()));
        continue;
      }
      if (err) throw err;
      if (!set || !wait) throw new Error('Redis answered no WAIT');
      return Number(wait[1]);
    }
  };

  const send = (id: string, group: { inFlight: boolean; next?: Pending }) => {
    const p = group.next!;
    group.next = undefined;
    group.inFlight = true;
    fence(p.key)
      .then((acked) => p.settle.resolve(acked))
      .catch((err: unknown) => p.settle.reject(err))
      .finally(() => {
        group.inFlight = false;
        if (group.next) send(id, group);
        else groups.delete(id);
      });
  };

  return async (key, what) => {
    const id = redis.isCluster ? key : '';
    let group = groups.get(id);
    if (!group) groups.set(id, (group = { inFlight: false }));
    // The next fence is sent after this call (now, or once the one in flight returns), so it covers what the caller wrote.
    let pending = group.next;
    if (!pending) {
      let settle!: Pending['settle'];
      const done = new Promise<number>((resolve, reject) => (settle = { resolve, reject }));
      group.next = pending = { key, done, settle };
      if (!group.inFlight) send(id, group);
    }
    const acked = await pending.done.catch((err: unknown) => {
      throw new ReplicasBehindError(`the wait for Redis replicas to acknowledge ${what} failed: ${(err as Error).message}`, { cause: err });
    });
    if (!(acked >= replicas)) {
      throw new ReplicasBehindError(`${acked} of ${replicas} Redis replicas acknowledged ${what} within ${timeoutMs} ms`);
    }
  };
}

/**
 * Each time `redis` becomes ready, reads how many replicas each Redis master has connected (`INFO replication`,
 * every master of a cluster) and calls `warn` when one has fewer than REDIS_WAIT_REPLICAS asks for: every wait
 * would then time out, and the operator should hear why at start-up rather than from the 503s or the delayed flushes.
 */
export function warnOnTooFewReplicas(redis: RedisConnection, replicas: number, warn: (message: string) => void): void {
  redis.on('ready', () => {
    const nodes = redis.isCluster ? (redis as Cluster).nodes('master') : [redis as Redis];
    Promise.all(nodes.map(async (n) => Number(/^connected_slaves:(\d+)/m.exec(await n.info('replication'))?.[1])))
      .then((counts) => {
        const fewest = Math.min(...counts);
        if (fewest < replicas)
          warn(
            `REDIS_WAIT_REPLICAS is ${replicas}, but a Redis master has ${fewest} replica${fewest === 1 ? '' : 's'} connected: every wait for replicas times out until enough are`,
          );
      })
      .catch(() => {}); // Redis went away again: the waits say so
  });
}
