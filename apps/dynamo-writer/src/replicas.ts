import { TallyError, type RedisKeys } from '@tally/key-layout';
import type { Cluster, Redis } from 'ioredis';

/** Fewer Redis replicas than REDIS_WAIT_REPLICAS acknowledged a flush's outbox in time: the flush waits and retries. */
export class ReplicasBehindError extends TallyError {
  readonly code = 'TALLY_ERR_REDIS_REPLICAS_BEHIND';
}

/** How long a store's fence key lives after the last flush that wrote it. */
const FENCE_TTL_MS = 60_000;

/**
 * The writer's wait for Redis replicas (REDIS_WAIT_REPLICAS): before a row's DynamoDB write, a write of the store's
 * fence key and `WAIT replicas timeoutMs` on the same connection, one pipeline (so on a cluster both go to the
 * store's master). Redis orders the fence after every write it had made before, the seals and folds whose outbox
 * entries the flush read among them, and WAIT returns once that many replicas have acknowledged the fence. So
 * DynamoDB never gets what a replica promoted after a crash of its master would lack (docs/DESIGN.md invariant 1).
 * Fewer replicas in time: ReplicasBehindError, and the flush waits and retries as it does while DynamoDB throttles.
 *
 * `redis` is a connection of its own: WAIT blocks its connection until it returns.
 */
export function replicaFence(redis: Redis | Cluster, keys: RedisKeys, replicas: number, timeoutMs: number) {
  return async (store: string): Promise<void> => {
    const [fence, wait] = (await redis.pipeline().set(keys.fence(store), '1', 'PX', FENCE_TTL_MS).wait(replicas, timeoutMs).exec()) ?? [];
    const err = fence?.[0] ?? wait?.[0];
    if (err) throw err;
    const acked = Number(wait?.[1]);
    if (!(acked >= replicas))
      throw new ReplicasBehindError(`${acked} of ${replicas} Redis replicas acknowledged the outbox within ${timeoutMs} ms`);
  };
}
