import { keySlot, TallyError, type RedisKeys } from '@tally/key-layout';
import { Redis, ReplyError, type Cluster } from 'ioredis';
import { closeConnection, closeCount, serverOf, type RedisConnection } from './connection';

/**
 * Fewer Redis replicas than REDIS_WAIT_REPLICAS acknowledged a write in time, or a connection closed meanwhile: Redis
 * may hold the write, but a failover could lose it.
 */
export class ReplicasBehindError extends TallyError {
  readonly code = 'TALLY_ERR_REDIS_REPLICAS_BEHIND';
  /**
   * The idempotency key to retry the batch under, set by libs/intake: the caller's, or the one it gave a batch that
   * came without one. A retry under it counts the batch once.
   */
  idempotencyKey?: string;
}

/** A wait for Redis replicas to hold what a caller read or wrote (createReplicaFence). */
export interface ReplicaFence {
  /** A reading to take before the first Redis read or write that a wait is to cover. */
  mark(): number;
  /**
   * Resolves once `replicas` Redis replicas hold every write Redis had made before the call (on a cluster, on the
   * master of each key: one fence per master, sent at once; on one server, one fence covers every key), or throws
   * ReplicasBehindError naming `what` when fewer acknowledged within the timeout on any of them, a wait itself failed
   * (Redis unreachable), or a connection closed since `mark` was read.
   */
  wait(key: string | readonly string[], what: string, mark: number): Promise<void>;
}

/** How long a fence key lives after the last fence that wrote it. */
const FENCE_TTL_MS = 60_000;
/** MOVED answers one fence follows (slots refreshed each time) before it fails. */
const MAX_REDIRECTIONS = 2;
/** The suffix of a fence key's probe (askProbe). */
const PROBE_SUFFIX = ':ask';

/**
 * A key of `key`'s hash slot that is never kept (a fence writes it on an importing master for the WAIT, then deletes
 * it): a read of it is answered ASK by a master whose slot is migrating away, naming the importing master. Undefined
 * when no such name shares the slot (a key with a hash tag always has one).
 */
function askProbe(key: string): string | undefined {
  return [key + PROBE_SUFFIX, `{${key}}${PROBE_SUFFIX}`].find((probe) => keySlot(probe) === keySlot(key));
}

interface Pending {
  keys: Set<string>;
  done: Promise<number>;
  settle: { resolve: (acked: number) => void; reject: (err: unknown) => void };
}

/**
 * A wait for Redis replicas (REDIS_WAIT_REPLICAS): a write of a fence key and `WAIT replicas timeoutMs` on the same
 * connection, one pipeline (so on a cluster both go to the key's master). Redis orders the fence after every write it
 * had made before, and WAIT returns once that many replicas have acknowledged the fence, and so everything before it.
 *
 * Group commit: a call made while a fence of its group is in flight waits for the next one, sent when that returns,
 * and every call waiting for it shares it, so one WAIT at a time covers any number of writers, and a call waits at
 * most two WAITs. The group is, on a Redis Cluster, the nodes that the slot map names for the key's slot (its master:
 * WAITs block the one connection to it, so one at a time; the key itself while no slots are known), the next fence
 * writing every key waiting for it; and the whole server otherwise (any key of it fences every write).
 *
 * A call given several keys (writes in several hash slots: on a cluster, possibly on several masters) joins the group
 * of each master on a cluster, the fences sent at once, and passes only when every one does; on one server it joins
 * the one group with its first key: one WAIT covers them all, as it would one key.
 *
 * While a key's slot migrates between masters (a reshard), a write of a key the migrating master no longer holds, a
 * new one, is answered ASK and made on the importing master, which the WAIT on the migrating master does not cover.
 * So on a cluster each pipeline also reads a probe of each key's slot (askProbe, never kept: the migrating master
 * answers ASK, naming the importing one), and for a slot that migrates the fence is made on the importing master too
 * (ASKING and a write of the probe there, WAIT, the probe deleted; a new master with no slot yet, which the slot map
 * does not name, on a short-lived connection of its own): the call passes only when both WAITs do. A fence
 * key that has moved already is answered ASK itself: no fence write is then made on the migrating master, whose WAIT
 * would cover nothing of the writes still made there, so the fence fails (the caller waits, or answers 503) until the
 * migration ends.
 *
 * A wait covers what the caller did on `covers` (its connections for data) only while they and `redis` talk to the
 * server they talked to at its mark. When one of them closes, what it had in flight is sent again after it
 * reconnects, and the next commands go to the server it reconnects to: after a failover, the promoted replica. A
 * fence answered there says nothing of what the dead master alone took (a flush read that outbox, a batch went
 * there). So a wait fails when any of these connections closed since the caller's mark: the caller then waits and
 * retries, or answers 503, as when the replicas lag. It fails too when they talk to different servers, though none
 * closed: a data connection left on an old master that is cut off from the Sentinels but still up, while the fence's
 * connection dropped and reconnected to the promoted replica (serverOf: the run_id, or on a cluster the master each
 * connection's slot map names for the key).
 *
 * `redis` is a connection of its own: WAIT blocks its connection until it returns.
 */
export function createReplicaFence(
  redis: RedisConnection,
  replicas: number,
  timeoutMs: number,
  covers: readonly RedisConnection[],
): ReplicaFence {
  const counts = [redis, ...covers].map(closeCount);
  const mark = () => counts.reduce((sum, count) => sum + count(), 0);
  const groups = new Map<string, { inFlight: boolean; next?: Pending }>();
  /** The group of `key`: as ioredis groups a pipeline's keys (one node list), so one pipeline can fence them all. */
  const groupOf = (key: string) => (redis.isCluster ? ((redis as Cluster).slots[keySlot(key)]?.join(';') ?? key) : '');

  /** The fewest replicas that acknowledged a fence of `keys`: one pipeline, and one WAIT, per group (as now known). */
  const fence = async (keys: readonly string[], redirections = 0): Promise<number> => {
    const acked = await Promise.all(
      [...Map.groupBy(keys, groupOf).values()].map(async (group) => {
        const pipeline = redis.pipeline();
        for (const key of group) pipeline.set(key, '1', 'PX', FENCE_TTL_MS);
        // On a cluster, a read of each key's probe: answered ASK while its slot migrates away (a reshard).
        const probes = redis.isCluster ? group.map(askProbe) : [];
        for (const probe of probes) if (probe) pipeline.exists(probe);
        const probed = probes.filter((p) => p !== undefined);
        const replies = (await pipeline.wait(replicas, timeoutMs).exec()) ?? [];
        // A failover moved a key's slot to another master. ioredis follows no redirection for a pipeline in which a
        // write succeeded (the WAIT, on the wrong node), nor learns the new owner: refresh its slots, then send again.
        if (redis.isCluster && replies.some(([e]) => /^MOVED /.test(e?.message ?? '')) && redirections < MAX_REDIRECTIONS) {
          await new Promise<void>((resolve) => (redis as Cluster).refreshSlotsCache(() => resolve()));
          return fence(group, redirections + 1);
        }
        // A slot migrating away: a write of a key its master no longer holds (a new one) was made on the importing
        // master (ASK), which this WAIT does not cover. The probes the master answered ASK, by importing master.
        const importing = new Map<string, string[]>();
        probed.forEach((probe, i) => {
          const to = /^ASK \d+ (\S+)/.exec(replies[group.length + i]?.[0]?.message ?? '')?.[1];
          if (to) importing.set(to, [...(importing.get(to) ?? []), probe]);
        });
        // Any other error fails the fence: a fence key its master no longer holds (moved already) is answered ASK too,
        // and with no write of this fence there, no WAIT here covers the writes still made on this master.
        const err = replies.find(([e], i) => e && !(i >= group.length && i < group.length + probed.length && /^ASK /.test(e.message)))?.[0];
        if (err) throw err;
        const wait = replies[group.length + probed.length];
        if (!wait) throw new Error('Redis answered no WAIT');
        const there = await Promise.all([...importing].map(([to, ps]) => fenceImporting(to, ps)));
        return Math.min(Number(wait[1]), ...there);
      }),
    );
    return Math.min(...acked);
  };

  /**
   * The replicas that acknowledged a fence on the master `to` (host:port) importing the slots of `probes`: ASKING and
   * a write of each probe there (which it serves while it imports their slot), WAIT, then the probes deleted. A master
   * the connection does not know after one refresh of its slots (a new one with no slot yet, which CLUSTER SLOTS does
   * not name: a scale-out's) is fenced on a connection of its own, with the cluster's node options (password, TLS),
   * closed after. Throws when that master refuses (the migration ended meanwhile: MOVED) or cannot be reached.
   */
  const fenceImporting = async (to: string, probes: readonly string[]): Promise<number> => {
    const cluster = redis as Cluster;
    const known = () => cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === to);
    let node = known();
    if (!node) {
      await new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve()));
      node = known();
    }
    const at = to.lastIndexOf(':');
    const own = node
      ? undefined
      : new Redis({
          ...cluster.options.redisOptions,
          host: to.slice(0, at),
          port: Number(to.slice(at + 1)),
          enableOfflineQueue: true,
          retryStrategy: () => null,
        });
    own?.on('error', () => undefined); // told by the pipeline's replies
    try {
      const pipeline = (node ?? own!).pipeline();
      for (const probe of probes) pipeline.asking().set(probe, '1', 'PX', FENCE_TTL_MS);
      pipeline.wait(replicas, timeoutMs);
      for (const probe of probes) pipeline.asking().del(probe);
      const replies = (await pipeline.exec()) ?? [];
      const err = replies.find(([e]) => e)?.[0];
      if (err) throw err;
      const wait = replies[2 * probes.length];
      if (!wait) throw new Error('Redis answered no WAIT');
      return Number(wait[1]);
    } finally {
      if (own) await closeConnection(own);
    }
  };

  const send = (id: string, group: { inFlight: boolean; next?: Pending }) => {
    const p = group.next!;
    group.next = undefined;
    group.inFlight = true;
    fence([...p.keys])
      .then((acked) => p.settle.resolve(acked))
      .catch((err: unknown) => p.settle.reject(err))
      .finally(() => {
        group.inFlight = false;
        if (group.next) send(id, group);
        else groups.delete(id);
      });
  };

  const closedSince = (what: string) =>
    new ReplicasBehindError(
      `a Redis connection closed between ${what} and the wait for replicas: a failover may have moved it to another server`,
    );
  /** The replicas that acknowledged the next fence of group `id`, with `keys`: sent now, or once the one in flight returns. */
  const join = (id: string, keys: readonly string[]): Promise<number> => {
    let group = groups.get(id);
    if (!group) groups.set(id, (group = { inFlight: false }));
    let pending = group.next;
    if (!pending) {
      let settle!: Pending['settle'];
      const done = new Promise<number>((resolve, reject) => (settle = { resolve, reject }));
      group.next = pending = { keys: new Set(keys), done, settle };
      if (!group.inFlight) send(id, group);
    } else if (redis.isCluster) for (const key of keys) pending.keys.add(key);
    return pending.done;
  };

  const wait = async (key: string | readonly string[], what: string, since: number) => {
    if (mark() !== since) throw closedSince(what);
    // On a cluster one fence per master, of its keys; on one server any key fences every write, so the first covers
    // them all.
    const keys = typeof key === 'string' ? [key] : [...new Set(key)];
    if (keys.length === 0) throw new Error(`no fence key given for ${what}`);
    const fenced = redis.isCluster ? keys : keys.slice(0, 1);
    // Which server each connection talks to, asked now (once per connection's life): ahead of this call's fences.
    for (const k of fenced) for (const c of [redis, ...covers]) void serverOf(c, k);
    // The next fences are sent after this call, so they cover what the caller wrote.
    const answers = await Promise.all([...Map.groupBy(fenced, groupOf)].map(([id, ks]) => join(id, ks))).catch((err: unknown) => {
      throw new ReplicasBehindError(`the wait for Redis replicas to acknowledge ${what} failed: ${(err as Error).message}`, { cause: err });
    });
    const acked = Math.min(...answers);
    if (!(acked >= replicas)) {
      throw new ReplicasBehindError(`${acked} of ${replicas} Redis replicas acknowledged ${what} within ${timeoutMs} ms`);
    }
    for (const k of fenced) {
      const servers = new Set((await Promise.all([redis, ...covers].map((c) => serverOf(c, k)))).filter((s) => s !== undefined));
      if (servers.size > 1) {
        throw new ReplicasBehindError(
          `${what} and the wait for replicas went to different Redis servers (${[...servers].join(', ')}): a failover may have left a connection on the old master`,
        );
      }
    }
    // After the answers too: a fence sent again after a reconnect is answered by the server it reconnected to.
    if (mark() !== since) throw closedSince(what);
  };
  return { mark, wait };
}

/**
 * Each time `redis` becomes ready, reads how many replicas each Redis master has connected (`INFO replication`,
 * every master of a cluster) and calls `warn` when one has fewer than REDIS_WAIT_REPLICAS asks for: every wait
 * would then time out, and the operator should hear why at start-up rather than from the 503s or the delayed flushes.
 * It warns too when Redis refuses INFO (an ACL user without it): then neither the replicas nor, outside a cluster,
 * the server each connection talks to can be read, so a wait cannot tell a promoted replica from the old master.
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
      .catch((err: unknown) => {
        // Not answered: Redis went away again, and the waits say so. Refused: only the operator can mend it.
        if (err instanceof ReplyError)
          warn(
            `REDIS_WAIT_REPLICAS is ${replicas}, but Redis refuses INFO (${(err as Error).message}): the replicas connected cannot be checked, and after a failover a wait cannot tell the promoted replica from the old master; allow the Redis user INFO (ACL +info)`,
          );
      });
  });
}

/** A wait for Redis replicas on one store's data: `mark` before the first command it covers, `wait` before the work counts as done. */
export interface StoreFence {
  mark(): number;
  /**
   * Waits on the store's fence key and on each key of `also`: fence keys of the other hash slots the work wrote (on
   * a Redis Cluster, possibly other masters), so that the work counts as done only once their replicas hold those
   * writes too. On one server the one wait covers them all.
   */
  wait(store: string, mark: number, also?: readonly string[]): Promise<void>;
  /** The ReplicaFence it waits with, for waits on other keys than a store's (the sealer's moves of stores between work-set shards). */
  readonly fence: ReplicaFence;
}

/**
 * A ReplicaFence on each store's fence key (`keys.fence`), so on a Redis Cluster on the master of the store's slot,
 * which need not be the master of the queue the work came from, and on the `also` keys' masters; `what` names what
 * it waits for in its error.
 */
export const storeFence = (fence: ReplicaFence, keys: Pick<RedisKeys, 'fence'>, what: string): StoreFence => ({
  fence,
  mark: fence.mark,
  wait: (store, mark, also = []) => fence.wait(also.length === 0 ? keys.fence(store) : [keys.fence(store), ...also], what, mark),
});

/**
 * An app's REDIS_WAIT_REPLICAS on store data: undefined at 0; else a connection of its own for WAIT (a WAIT blocks its
 * connection), a warning when Redis has fewer replicas, and a storeFence covering the `covered` connections.
 */
export function storeFenceOf(opts: {
  /** REDIS_WAIT_REPLICAS */
  replicas: number;
  /** REDIS_WAIT_TIMEOUT_MS */
  timeoutMs: number;
  connect: () => RedisConnection;
  covered: RedisConnection[];
  keys: Pick<RedisKeys, 'fence'>;
  what: string;
  warn: (message: string) => void;
}): StoreFence | undefined {
  if (opts.replicas <= 0) return undefined;
  const waitRedis = opts.connect();
  warnOnTooFewReplicas(waitRedis, opts.replicas, opts.warn);
  return storeFence(createReplicaFence(waitRedis, opts.replicas, opts.timeoutMs, opts.covered), opts.keys, opts.what);
}
