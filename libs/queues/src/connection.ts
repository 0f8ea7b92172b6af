import { keySlot } from '@tally/key-layout';
import {
  Cluster,
  Redis,
  ReplyError,
  SentinelConnector,
  type ClusterOptions,
  type RedisOptions,
  type SentinelConnectionOptions,
} from 'ioredis';

/**
 * The Redis an installation uses: one server (REDIS_URL), a Redis Cluster (REDIS_CLUSTER_NODES), or the master that
 * Redis Sentinels name (REDIS_SENTINELS, REDIS_SENTINEL_MASTER).
 */
export interface RedisTarget {
  REDIS_URL: string;
  REDIS_CLUSTER_NODES?: ReadonlyArray<{ host: string; port: number }> | undefined;
  REDIS_SENTINELS?: ReadonlyArray<{ host: string; port: number }> | undefined;
  /** Default `mymaster`. */
  REDIS_SENTINEL_MASTER?: string | undefined;
  /** The Sentinels' own password (`requirepass` in sentinel.conf), when they have one. */
  REDIS_SENTINEL_PASSWORD?: string | undefined;
}

/** A connection to either: ioredis' Redis or Cluster client (both run the same commands, scripts and BullMQ). */
export type RedisConnection = Redis | Cluster;

/** ioredis' message for a connection closed (its CONNECTION_CLOSED_ERROR_MSG), which it does not emit while closing. */
const CONNECTION_CLOSED = 'Connection is closed.';

/**
 * ioredis' Sentinel connector, but one that asks no Sentinel once its connection is closed. While every Sentinel is
 * down it goes round them again and again, waiting sentinelRetryStrategy's delay between two rounds (10 ms more each
 * round, up to 1 s, by default); a disconnect() during that wait (closeConnection's) ended the loop only after one
 * more Sentinel connection, made after the close. Once disconnected (ioredis clears `connecting`; a reconnect sets it
 * again), the round after the wait finds no Sentinel left to ask and ends, as ioredis ends one closed while it asks a
 * Sentinel: with "Connection is closed.", which a connection being closed does not emit. The wait's own timer, and the
 * 2 s timers ioredis arms as it disconnects its short connections to the Sentinels, cannot be reached: they go by
 * themselves.
 */
class SentinelConnectorUntilClosed extends SentinelConnector {
  constructor(opts: unknown) {
    const options = opts as SentinelConnectionOptions; // ioredis passes the connection's options
    super(options);
    const iterator = this.sentinelIterator;
    const next = iterator.next.bind(iterator);
    iterator.next = () => (this.connecting ? next() : { done: true, value: {} });
    const retry = options.sentinelRetryStrategy;
    this.options = {
      ...options,
      // Called only at the end of a round, inside the connector's loop: a throw ends the loop as a closed one.
      sentinelRetryStrategy: (times) => {
        if (!this.connecting) throw new Error(CONNECTION_CLOSED);
        return retry?.(times);
      },
    };
  }
}

/**
 * Opens a connection to the target with `options` (per node, for a cluster). On a cluster the username,
 * password and TLS of REDIS_URL apply to every node, offline queueing follows `options.enableOfflineQueue`, and
 * no ioredis keyPrefix is ever set (BullMQ's cluster guidance: hash-tag prefixes instead). With REDIS_SENTINELS a
 * `Connector` option is refused (the connection uses its own: SentinelConnectorUntilClosed).
 */
export function createRedisConnection(
  target: RedisTarget,
  options: RedisOptions = {},
  cluster: Omit<ClusterOptions, 'redisOptions'> = {},
): RedisConnection {
  const sentinels = target.REDIS_SENTINELS ?? [];
  const nodes = target.REDIS_CLUSTER_NODES ?? [];
  if (sentinels.length && nodes.length) throw new Error('REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set: use one');
  if (!sentinels.length && !nodes.length) return new Redis(target.REDIS_URL, options);
  const url = new URL(target.REDIS_URL);
  const auth: RedisOptions = {
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
  };
  // The Sentinel connection's own connector (SentinelConnectorUntilClosed) would replace the caller's unseen.
  if (sentinels.length && options.Connector)
    throw new Error('a Connector option cannot be given with REDIS_SENTINELS: the Sentinel connection uses its own');
  if (sentinels.length)
    return new Redis({
      ...auth,
      ...options,
      sentinels: [...sentinels],
      name: target.REDIS_SENTINEL_MASTER ?? 'mymaster',
      ...(target.REDIS_SENTINEL_PASSWORD ? { sentinelPassword: target.REDIS_SENTINEL_PASSWORD } : {}),
      // rediss://: TLS to the Sentinels and to the master they name (ioredis applies `tls` to neither by itself).
      // The Sentinels take the master's TLS options (a CA given in `options.tls` serves both).
      ...(auth.tls ? { enableTLSForSentinelMode: true, sentinelTLS: options.tls ?? auth.tls } : {}),
      // A connection to a master that a failover demoted answers READONLY: ask the Sentinels again and resend (the
      // command was refused, not applied). ioredis' failoverDetector, which reconnects on the Sentinels' announcement,
      // left producer connections reconnecting forever in at least 2 of 5 failover runs here, so it is not used.
      reconnectOnError: (err) => (/^READONLY/.test(err.message) ? 2 : false),
      // Its connection closed, it asks no Sentinel again.
      Connector: SentinelConnectorUntilClosed,
    });
  return new Cluster([...nodes], {
    enableOfflineQueue: options.enableOfflineQueue ?? true,
    // A failed-over or restarted master answers MOVED / CLUSTERDOWN for a moment: retry rather than fail.
    retryDelayOnClusterDown: 200,
    retryDelayOnFailover: 200,
    retryDelayOnTryAgain: 200,
    // Slots move back to a restarted master: wait a little between MOVED redirections rather than spend them all at once.
    retryDelayOnMoved: 100,
    slotsRefreshTimeout: 2_000,
    clusterRetryStrategy: (times) => Math.min(100 * times, 2_000),
    ...cluster,
    redisOptions: { ...auth, ...options },
  });
}

const closeCounts = new WeakMap<RedisConnection, { closes: number }>();

/**
 * How many times `connection` closed (on a cluster, the connection to any node) since the first call for it: a count
 * that only grows. A command in flight when a connection closes is sent again once it reconnects, and a command sent
 * after that goes to whatever server the address or the Sentinels name then: after a failover, another server than
 * the one that answered before. libs/queues replica-fence.ts compares two readings to know that did not happen.
 */
export function closeCount(connection: RedisConnection): () => number {
  let count = closeCounts.get(connection);
  if (!count) {
    const c = { closes: 0 };
    closeCounts.set(connection, (count = c));
    const onClose = () => void c.closes++;
    if (connection.isCluster) {
      const cluster = connection as Cluster;
      const watch = (node: Redis) => node.on('close', onClose);
      cluster.nodes().forEach(watch);
      cluster.on('+node', watch);
      cluster.on('-node', onClose);
    }
    connection.on('close', onClose);
  }
  const c = count;
  return () => c.closes;
}

const runIds = new WeakMap<Redis, { closes: number; id: Promise<string | undefined> }>();

/**
 * The Redis server `connection` sends `key` to now: on a cluster, the master its slot map names for the key's slot;
 * otherwise the server's run_id (`INFO server`), read once per life of the connection (until it next closes).
 * Undefined when that is not known: a cluster whose slots are not loaded, or a server that refuses INFO.
 */
export async function serverOf(connection: RedisConnection, key: string): Promise<string | undefined> {
  if (connection.isCluster) return (connection as Cluster).slots[keySlot(key)]?.[0];
  const redis = connection as Redis;
  const closes = closeCount(redis)();
  let known = runIds.get(redis);
  if (known?.closes !== closes) {
    const entry = {
      closes,
      id: redis.info('server').then(
        (info) => /^run_id:(\w+)/m.exec(info)?.[1],
        (err: unknown) => {
          // Refused (INFO renamed or denied): unknown for this life. Not answered: asked again at the next call.
          if (!(err instanceof ReplyError) && runIds.get(redis) === entry) runIds.delete(redis);
          return undefined;
        },
      ),
    };
    runIds.set(redis, (known = entry));
  }
  return known.id;
}

/**
 * How long closeConnection waits for QUIT's answer. A Redis that answers at all answers it at once (after the commands
 * sent before it, each answered as usual); one that is frozen or unreachable does not, and QUIT would wait for the
 * connection's command timeout (5 s for a producer's; a connection without one, for ever).
 */
export const QUIT_TIMEOUT_MS = 1_000;

const workerTemplates = new WeakMap<Cluster, Cluster>();

/**
 * The connection BullMQ Workers of a Redis Cluster `cluster` are given: a duplicate of it without ioredis' cluster
 * ready check (`enableReadyCheck: false`), one per cluster, connecting at once as `cluster` does; its errors go to
 * `cluster`'s listeners, and closeConnection(`cluster`) closes it first. A Worker takes it as its command connection
 * and duplicates it for its blocking wait for jobs (BZPOPMIN). Without the check, because with it a failover could
 * strand a Worker for good (`scheduler-failover.cluster.int.test.ts`): BullMQ's own watchdog ends the blocking
 * connection when a BZPOPMIN outlives its timeout and waits for `Cluster.connect()` to bring it back; a connect that
 * loads the slots while the cluster reports `cluster_state:fail` (a master just SIGKILLed, its replica not yet
 * promoted) fails the ready check, and ioredis reconnects on its own but never settles that connect's promise
 * (redis/ioredis#709, bullmq#4138), so the Worker waits on it for ever: running, and taking no job. Without the check
 * the connect settles once the slots are loaded; a command sent while the cluster is still down is answered
 * CLUSTERDOWN and retried (retryDelayOnClusterDown), as it would be once ready. Not lazy: BullMQ calls `connect()`
 * itself on a connection that has not started, and a first connect to a cluster not reachable yet rejects, which
 * BullMQ keeps as its client for good and retries at once, for ever, starving the process (its timers, HTTP server and
 * SIGTERM handler: `workers.cluster.int.test.ts`).
 */
export function clusterWorkerConnection(cluster: Cluster): Cluster {
  let template = workerTemplates.get(cluster);
  if (!template) {
    template = cluster.duplicate([], { enableReadyCheck: false, lazyConnect: false });
    template.on('error', (err: Error) => cluster.emit('error', err));
    workerTemplates.set(cluster, template);
  }
  return template;
}

/**
 * Closes a connection for good: QUIT when it is connected (what was sent is answered first), waiting at most
 * QUIT_TIMEOUT_MS for its answer, else (not connected, or no answer in time) at once. A QUIT on a connection that is
 * not would wait in its offline queue for a Redis that is not there, or be refused. Resolves once the connection's
 * sockets are closed: nothing of it keeps the process up but what ioredis holds out of its reach, gone within about
 * 2 s (a Cluster's connections that ask for the slots; a Sentinel connection's wait between two rounds of the
 * Sentinels, up to 1 s, and its short connections to them: one under way until its connect timeout, the disconnect
 * timer of 2 s of each).
 */
export async function closeConnection(connection: RedisConnection): Promise<void> {
  const template = connection.isCluster ? workerTemplates.get(connection as Cluster) : undefined;
  if (template) {
    workerTemplates.delete(connection as Cluster);
    await closeConnection(template);
  }
  if (connection.status === 'ready') {
    let timer: NodeJS.Timeout | undefined;
    const quit = connection.quit().then(
      () => true,
      () => false,
    );
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), QUIT_TIMEOUT_MS)));
    const quitted = await Promise.race([quit, late]).finally(() => clearTimeout(timer));
    if (quitted) return;
  }
  // ioredis' disconnect ends the last socket and arms a timer (disconnectTimeout, 2 s) to destroy it should it not
  // close, which its 'close' clears. A socket closed already (Redis down: the connection waits to reconnect) does not
  // close again, and that timer alone kept the process up 2 s after the close: its listener is told the socket closed.
  // One still open is destroyed: a Redis that is frozen (or a host gone) never closes its side, which left the socket
  // and the timer 2 s.
  const sockets = (connection.isCluster ? (connection as Cluster).nodes() : [connection as Redis]).map((node) => node.stream);
  connection.disconnect();
  const closing: Promise<unknown>[] = [];
  for (const socket of sockets) {
    if (!socket) continue;
    if (socket.closed) socket.emit('close', false);
    else {
      closing.push(new Promise((resolve) => socket.once('close', resolve)));
      socket.destroy();
    }
  }
  await Promise.all(closing);
}

/** A description of the target safe to log (no password). */
export function describeRedisTarget(target: RedisTarget): string {
  const list = (nodes: ReadonlyArray<{ host: string; port: number }>) => nodes.map((n) => `${n.host}:${n.port}`).join(',');
  if (target.REDIS_CLUSTER_NODES?.length) return `cluster ${list(target.REDIS_CLUSTER_NODES)}`;
  if (target.REDIS_SENTINELS?.length)
    return `master ${target.REDIS_SENTINEL_MASTER ?? 'mymaster'} of sentinels ${list(target.REDIS_SENTINELS)}`;
  // Up to the last `@` (a password may hold one), and the query (ioredis reads `?password=`).
  return target.REDIS_URL.replace(/\/\/.*@/, '//***@').replace(/\?.*$/, '?***');
}
