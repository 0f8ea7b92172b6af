import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { ServiceStartError } from './errors';
import { startRedis, type RedisHandle, type StartRedisOptions } from './redis';
import { testRedis } from './redis-replica';
import { sleep, waitFor } from './wait';

const run = promisify(execFile);

export interface StartRedisClusterOptions extends Pick<StartRedisOptions, 'appendfsync' | 'binary' | 'startTimeoutMs'> {
  /** Masters. Default 3. */
  masters?: number;
  /** Replicas of each master (`--cluster-replicas`), for failover tests. Default 0. */
  replicas?: number;
  /** cluster-node-timeout in ms. Default 2000. */
  nodeTimeoutMs?: number;
  /** Extra redis-server arguments for every node. */
  args?: string[];
  /** The redis-cli binary. Default `redis-cli` from PATH. */
  cliBinary?: string;
}

export interface RedisClusterHandle {
  /**
   * One handle per node, the masters first (kill / restart one; its AOF and nodes.conf survive in its dir). After a
   * failover a replica is a master: `masterOf` says which node serves a key now.
   */
  readonly nodes: readonly RedisHandle[];
  /** `127.0.0.1:<port>,…`: REDIS_CLUSTER_NODES for the apps. */
  readonly nodesEnv: string;
  /** Seed nodes for ioredis' Cluster client. */
  readonly seeds: Array<{ host: string; port: number }>;
  /** The node that serves `key`'s slot as master now. */
  masterOf(key: string): Promise<RedisHandle>;
  /** Resolves once every node reports cluster_state:ok (after a restart, say). */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Stops every node and removes their dirs. Idempotent. */
  stop(): Promise<void>;
}

/**
 * One redis-server ready to join a cluster (`--cluster-enabled yes`, AOF on, as startRedisCluster's nodes): for
 * CLUSTER MEET / `redis-cli --cluster add-node` in a test that grows a cluster.
 */
export function startClusterNode(
  opts: Pick<StartRedisClusterOptions, 'appendfsync' | 'binary' | 'startTimeoutMs' | 'nodeTimeoutMs' | 'args'> = {},
): Promise<RedisHandle> {
  return startRedis({
    appendonly: true,
    appendfsync: opts.appendfsync,
    binary: opts.binary,
    startTimeoutMs: opts.startTimeoutMs,
    args: [
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      'nodes.conf',
      '--cluster-node-timeout',
      String(opts.nodeTimeoutMs ?? 2_000),
      '--cluster-require-full-coverage',
      'no',
      ...(opts.args ?? []),
    ],
  });
}

/**
 * A local Redis Cluster for tests: `masters` redis-server processes with `--cluster-enabled yes` on random ports
 * (AOF on, each with its own dir, as startRedis), joined with `redis-cli --cluster create … --cluster-yes`, all
 * 16384 slots covered. `cluster-require-full-coverage no`: while one master is down the others keep serving
 * their slots. Every process is SIGKILLed when the test process exits.
 */
export async function startRedisCluster(opts: StartRedisClusterOptions = {}): Promise<RedisClusterHandle> {
  const masters = opts.masters ?? 3;
  const replicas = opts.replicas ?? 0;
  const nodeTimeout = opts.nodeTimeoutMs ?? 2_000;
  const nodes: RedisHandle[] = [];
  const stopAll = () => Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      nodes.push(await startClusterNode({ ...opts, nodeTimeoutMs: nodeTimeout }));
    }
    const addresses = nodes.map((n) => `127.0.0.1:${n.port}`);
    try {
      await run(
        opts.cliBinary ?? 'redis-cli',
        ['--cluster', 'create', ...addresses, '--cluster-replicas', String(replicas), '--cluster-yes'],
        {
          timeout: 60_000,
        },
      );
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new ServiceStartError(`redis-cli --cluster create failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`, { cause: err });
    }
    // Every replica through its first sync before the cluster is handed out: until then it cannot be promoted, so a
    // failover test that SIGKILLs a master early would wait for a promotion that never comes.
    if (replicas > 0) {
      await waitFor(async () => (await Promise.all(nodes.map(isReplicaInSync))).filter(Boolean).length === masters * replicas, {
        timeoutMs: 60_000,
        message: `the cluster's ${masters * replicas} replicas in sync`,
      });
    }
  } catch (err) {
    await stopAll();
    throw err;
  }

  const handle: RedisClusterHandle = {
    nodes,
    nodesEnv: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
    seeds: nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    async masterOf(key) {
      for (const n of nodes) {
        if (!n.running) continue;
        const c = new Redis({ port: n.port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null });
        c.on('error', () => undefined);
        try {
          const slot = Number(await c.cluster('KEYSLOT', key));
          const ranges = await c.cluster('SLOTS');
          const port = ranges.find(([from, to]) => slot >= from && slot <= to)?.[2]?.[1];
          const master = nodes.find((x) => x.port === port);
          if (master) return master;
        } catch {
          // this node cannot say: ask the next
        } finally {
          c.disconnect();
        }
      }
      throw new Error(`no node of the cluster serves the slot of ${key}`);
    },
    async waitHealthy(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      let last = '';
      for (;;) {
        const states = await Promise.all(nodes.map((n) => clusterState(n.port)));
        if (states.every((s) => s.ok && s.slots === 16_384)) return;
        last = states.map((s, i) => `${nodes[i]!.port}: ${s.text}`).join('; ');
        if (Date.now() > deadline) throw new ServiceStartError(`redis cluster not healthy after ${timeoutMs}ms: ${last}`);
        await sleep(100);
      }
    },
    async stop() {
      await stopAll();
    },
  };
  try {
    await handle.waitHealthy(opts.startTimeoutMs ?? 30_000);
  } catch (err) {
    await stopAll();
    throw err;
  }
  return handle;
}

async function clusterState(port: number): Promise<{ ok: boolean; slots: number; text: string }> {
  const c = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1_000,
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    const info = await c.cluster('INFO');
    const state = /cluster_state:(\w+)/.exec(info)?.[1] ?? '?';
    const slots = Number(/cluster_slots_ok:(\d+)/.exec(info)?.[1] ?? 0);
    return { ok: state === 'ok', slots, text: `state ${state}, ${slots} slots ok` };
  } catch (err) {
    return { ok: false, slots: 0, text: (err as Error).message };
  } finally {
    c.disconnect();
  }
}

/** Whether the node is a replica whose link to its master is up (its first sync done). */
async function isReplicaInSync(node: RedisHandle): Promise<boolean> {
  const r = testRedis(node.url);
  try {
    const info = await r.info('replication');
    return /^role:slave\r?$/m.test(info) && /^master_link_status:up\r?$/m.test(info);
  } finally {
    r.disconnect();
  }
}
