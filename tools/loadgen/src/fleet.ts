import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AppName } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { allQueues, closeQueues, createQueues, createRedisConnection, type RedisTarget } from '@tally/queues';
import { compileRules, defaultRules, type RulesInput } from '@tally/schema';
import { createTenantAdmin } from '@tally/tenants';
import { createTestTable, sleep, startApp, startDynalite, startRedis, startRedisCluster, startedProcesses } from '@tally/testing';
import type { AppSource, RedisHandle } from '@tally/testing';
import type { StoreSpec } from './generator';

/** The default e-commerce rules with every row flushed after every bucket: the most writes, the hardest case. */
export function everyBucketRules(): RulesInput {
  const rules = structuredClone(defaultRules) as RulesInput;
  for (const entity of Object.values(rules.entities)) entity.flush = { kind: 'bucket' };
  return rules;
}

export interface FleetOptions {
  stores: readonly StoreSpec[];
  rules: RulesInput;
  /** Processes per app. Default 1 each. */
  replicas?: Partial<Record<AppName, number>>;
  bucketSeconds?: number;
  /** Extra environment for every app (LOG_LEVEL, DEDUPE_WINDOW_SECONDS, …). */
  env?: Record<string, string>;
  appEnv?: Partial<Record<AppName, Record<string, string>>>;
  /** Redis AOF fsync policy. Default `always` (nothing acknowledged is lost on SIGKILL). */
  appendfsync?: 'always' | 'everysec' | 'no';
  /** The DynamoDB endpoint the apps use, given dynalite's (e.g. a fault proxy in front of it). Default: dynalite's. */
  appsDynamoEndpoint?: (dynaliteEndpoint: string) => string | Promise<string>;
  /** Echo the apps' output to stderr. */
  echo?: boolean;
  /** KEY_PREFIX and QUEUE_SHARDS of the apps: default `lg` and 1. */
  prefix?: string;
  queueShards?: number;
  /** Run on a local Redis Cluster of this many masters (REDIS_CLUSTER_NODES), each with `clusterReplicas` (default 0). */
  clusterMasters?: number;
  clusterReplicas?: number;
  /** Use this running Redis (another installation's, say) instead of starting one; the fleet never stops it. */
  redis?: RedisHandle;
  /** With `redis`: reach it as the master these Redis Sentinels name (REDIS_SENTINELS), apps and checks alike. */
  sentinels?: { nodes: ReadonlyArray<{ host: string; port: number }>; master?: string };
  /** Run the apps from this checkout (another commit's worktree, for a before/after bench), from its bundles or sources
   * (startApp's `from`: default this checkout's bundles, another's sources). */
  root?: string;
  from?: AppSource;
}

export type Fleet = Awaited<ReturnType<typeof startFleet>>;
/** One app process slot (e.g. `dynamo-writer#2`), restartable. */
export type FleetApp = Fleet['apps'][number];

/** Anything shaped like a key Tally issues (`tly_` + 43 base64url characters). */
const KEY_SHAPE = /tly_[A-Za-z0-9_-]{43}/;

/**
 * A whole Tally fleet on this machine: redis-server (AOF), dynalite on disk, a fresh table, a tenant with keys per store,
 * a RULES_FILE and the four apps (with replicas); every process tracked, every app's output watched for API keys.
 */
export async function startFleet(opts: FleetOptions) {
  const work = mkdtempSync(join(tmpdir(), 'tally-fleet-'));
  const rulesFile = join(work, 'rules.json');
  writeFileSync(rulesFile, JSON.stringify(opts.rules));
  const rules = compileRules(opts.rules);
  const firstPid = startedProcesses().length;
  const leaks: string[] = [];

  const appendfsync = opts.appendfsync ?? 'always';
  const cluster = opts.clusterMasters
    ? await startRedisCluster({ masters: opts.clusterMasters, replicas: opts.clusterReplicas, appendfsync })
    : undefined;
  const redis = cluster?.nodes[0] ?? opts.redis ?? (await startRedis({ appendonly: true, appendfsync }));
  const dynalite = await startDynalite({ mode: 'child', path: join(work, 'dynalite') });
  const table = await createTestTable(dynalite.endpoint, { prefix: 'fleet' });
  const dynamo = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo, table });
  /** Keys issued for each store, one per scope, and `all` (ingest + read + admin). */
  const keys: Record<string, Record<'ingest' | 'read' | 'admin' | 'all', string>> = {};
  const zones: Record<string, string> = Object.fromEntries(opts.stores.map((s) => [s.id, s.timeZone]));
  for (const s of opts.stores) {
    await admin.createTenant(s.id, { timeZone: s.timeZone });
    const issue = (scopes: Array<'ingest' | 'read' | 'admin'>, label: string = scopes[0]!) =>
      admin.issueKey(s.id, scopes, `loadgen ${label}`);
    keys[s.id] = {
      ingest: await issue(['ingest']),
      read: await issue(['read']),
      admin: await issue(['admin']),
      all: await issue(['ingest', 'read', 'admin'], 'all scopes'),
    };
  }
  const appsEndpoint = opts.appsDynamoEndpoint ? await opts.appsDynamoEndpoint(dynalite.endpoint) : dynalite.endpoint;
  const env = {
    REDIS_URL: redis.url,
    ...(cluster && { REDIS_CLUSTER_NODES: cluster.nodesEnv }),
    ...(opts.sentinels && {
      REDIS_SENTINELS: opts.sentinels.nodes.map((n) => `${n.host}:${n.port}`).join(','),
      REDIS_SENTINEL_MASTER: opts.sentinels.master ?? 'mymaster',
    }),
    QUEUE_SHARDS: String(opts.queueShards ?? 1),
    DYNAMODB_ENDPOINT: appsEndpoint,
    DYNAMODB_TABLE: table,
    BUCKET_SECONDS: String(opts.bucketSeconds ?? 1),
    JOB_LOCK_MS: '1500',
    RULES_FILE: rulesFile,
    KEY_PREFIX: opts.prefix ?? 'lg',
    LOG_LEVEL: 'warn',
    ...opts.env,
  };

  const order: AppName[] = ['collector', 'query-api', 'bucket-aggregator', 'dynamo-writer'];
  const started = await Promise.all(
    order.flatMap((app) =>
      Array.from({ length: opts.replicas?.[app] ?? 1 }, async (_, i) => {
        const name = (opts.replicas?.[app] ?? 1) > 1 ? `${app}#${i + 1}` : app;
        const handle = await startApp(app, {
          env: { ...env, ...opts.appEnv?.[app] },
          name,
          echo: opts.echo,
          timeoutMs: 60_000,
          root: opts.root,
          from: opts.from,
          onLine: (text) => void (KEY_SHAPE.test(text) && leaks.push(`${name}: ${text}`)),
        });
        return {
          name,
          app,
          handle,
          url: handle.url,
          /** Restarts it (after a SIGKILL, or killing it first), retrying like a supervisor when it dies during start-up. */
          async restart(extra?: Record<string, string | undefined>) {
            for (let startupFailures = 0; ; await sleep(500)) {
              try {
                await handle.restart(extra);
                return { startupFailures };
              } catch (err) {
                // It died before answering /healthz: a supervisor would start it again.
                if (++startupFailures >= 10) throw err;
              }
            }
          },
        };
      }),
    ),
  );

  const target: RedisTarget = {
    REDIS_URL: redis.url,
    REDIS_CLUSTER_NODES: cluster?.seeds,
    REDIS_SENTINELS: opts.sentinels?.nodes,
    REDIS_SENTINEL_MASTER: opts.sentinels?.master,
  };
  const inspect = createRedisConnection(target, { maxRetriesPerRequest: null });
  inspect.on('error', () => {});
  const [prefix, queueShards] = [env.KEY_PREFIX, Number(env.QUEUE_SHARDS)];
  // A client sender holds producers back at the collector's queue limit, and waits for as many Redis replicas.
  const collectorEnv: Record<string, string | undefined> = { ...opts.env, ...opts.appEnv?.collector };
  const [maxDepth, waitReplicas] = [Number(collectorEnv['MAX_QUEUE_DEPTH'] ?? 0), Number(collectorEnv['REDIS_WAIT_REPLICAS'] ?? 0)];
  const queues = createQueues(inspect, { keyPrefix: prefix, shards: queueShards });
  for (const q of allQueues(queues)) q.on('error', () => {});

  let stopped = false;
  return {
    /** The Redis (with clusterMasters: the first master of `cluster`). */
    redis,
    cluster,
    dynalite,
    table,
    rules,
    stores: opts.stores,
    zones,
    keys,
    apps: started,
    app(app: AppName) {
      const a = started.find((x) => x.app === app);
      if (!a) throw new Error(`the fleet runs no ${app}`);
      return a;
    },
    /** Direct DynamoDB client (not through any proxy), for checks. */
    dynamo,
    admin,
    /** An inspection connection to Redis (reconnects forever; a Cluster client on a cluster) and the queues on it. */
    inspect,
    queues,
    prefix,
    queueShards,
    /** How a libs/client sender reaches this fleet's queues. */
    clientTarget: () => ({
      connection: target,
      keyPrefix: prefix,
      queueShards,
      rules,
      ...(maxDepth ? { backpressure: { maxDepth } } : {}),
      ...(waitReplicas ? { waitReplicas: { replicas: waitReplicas } } : {}),
    }),
    /** Every process started in this process since the fleet began to start (restarts included), with what it is. */
    pids: () => startedProcesses().slice(firstPid),
    /** Lines of any process that contained an issued API key (or anything shaped like one). */
    keyLeaks: () => [...leaks],
    /** Stops everything (apps gracefully, then dynalite and Redis) and removes the temp dirs. */
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all(started.map((a) => a.handle.stop().catch(() => a.handle.kill())));
      await closeQueues(queues).catch(() => undefined);
      inspect.disconnect();
      dynamo.destroy();
      await dynalite.stop();
      if (cluster) await cluster.stop();
      else if (!opts.redis) await redis.stop();
      rmSync(work, { recursive: true, force: true });
    },
  };
}
