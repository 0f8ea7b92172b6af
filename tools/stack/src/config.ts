import path from 'node:path';
import { z } from 'zod';
import { loadConfig, sharedEnvShape, type AppName } from '@tally/config';
import { WORKERS_STOP_TIMEOUT_MS } from '@tally/queues/worker-app';
import { appArgs, REPO_ROOT } from '@tally/testing';
import type { ProcessSpec } from './supervisor';

const port = z.coerce.number().int().min(1).max(65_535);
const ms = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const text = z.string().min(1).optional();

/** Everything `npm start` reads from the environment; the rest is passed through to the apps untouched. */
export const stackEnv = z.object({
  REDIS_URL: sharedEnvShape.REDIS_URL.unwrap().optional().describe('Use this Redis instead of starting redis-server.'),
  REDIS_CLUSTER_NODES: text.describe('Use this Redis Cluster (`host:port,…`, passed to the apps) instead of starting redis-server.'),
  REDIS_SENTINELS: text.describe(
    'Use the master these Redis Sentinels name (`host:port,…`, passed to the apps, with REDIS_SENTINEL_MASTER and REDIS_SENTINEL_PASSWORD) instead of starting redis-server.',
  ),
  REDIS_SENTINEL_MASTER: text.describe(
    "With REDIS_SENTINELS: the master's name, passed to the apps (unset: `mymaster`); both recorded with the stack's backends for `npm run dlq`, `tenants` and `loadgen`.",
  ),
  KEY_PREFIX: text.describe(
    "The apps' KEY_PREFIX, passed to them; recorded with the stack's backends, so `npm run dlq`, `tenants` and `loadgen` use it too.",
  ),
  QUEUE_SHARDS: text.describe(
    "The apps' QUEUE_SHARDS, passed to them; recorded with the stack's backends, so `npm run dlq`, `tenants` and `loadgen` use it too.",
  ),
  REDIS_APPENDFSYNC: z
    .enum(['everysec', 'always'])
    .default('always')
    .describe(
      'The AOF fsync policy of the redis-server the stack starts: `always` fsyncs before every answer; `everysec` can lose acknowledged writes in a crash, and exactly-once with them (README "Outages and recovery").',
    ),
  DYNAMODB_ENDPOINT: sharedEnvShape.DYNAMODB_ENDPOINT.describe('Use this DynamoDB endpoint instead of starting dynalite in-process.'),
  DYNAMODB_TABLE: sharedEnvShape.DYNAMODB_TABLE.describe('The table the stack creates when missing, and the apps use.'),
  AWS_REGION: sharedEnvShape.AWS_REGION.describe('Region for the DynamoDB client of the stack and the apps.'),
  LOG_LEVEL: sharedEnvShape.LOG_LEVEL.describe("The apps' pino level; the stack's own lines below it are not shown."),
  TALLY_DATA_DIR: text.describe(
    'Where redis-server (AOF, under `redis/`) and dynalite (under `dynamo/`) keep their files; unset = `.data` at the repo root.',
  ),
  COLLECTOR_PORT: port.optional().describe("The collector's port (must be free); unset = 7401, or a free port if 7401 is taken."),
  QUERY_API_PORT: port.optional().describe("The query-api's port (must be free); unset = 7402, or a free port if 7402 is taken."),
  AGGREGATOR_PORT: port.optional().describe("The bucket-aggregator's port (must be free); unset = 7403, or a free port if 7403 is taken."),
  WRITER_PORT: port.optional().describe("The dynamo-writer's port (must be free); unset = 7404, or a free port if 7404 is taken."),
  STACK_START_TIMEOUT_MS: ms(1_000, 600_000)
    .default(60_000)
    .describe('How long to wait for every app to answer /healthz before warning (they keep being supervised).'),
  STACK_READY_TIMEOUT_MS: ms(0, 600_000)
    .default(15_000)
    .describe(
      'How long the apps then get to answer /readyz (Redis reachable, the password taken) before the stack names those that do not.',
    ),
  STACK_STOP_TIMEOUT_MS: ms(100, 120_000)
    // The worker apps' workers get WORKERS_STOP_TIMEOUT_MS to finish their jobs, then the queues and Redis close: as
    // docker-compose.yml's stop_grace_period for them.
    .default(WORKERS_STOP_TIMEOUT_MS + 20_000)
    .describe(
      `How long an app (and then redis-server) gets after SIGTERM before SIGKILL; the default leaves the worker apps the ${WORKERS_STOP_TIMEOUT_MS / 1000} s they give their workers to finish their jobs, and time to close.`,
    ),
  NO_COLOR: z
    .string()
    .optional()
    .describe('Any value turns colours off (https://no-color.org); they are off anyway when stdout is not a terminal.'),
});

export type StackEnv = z.infer<typeof stackEnv>;
type Env = Record<string, string | undefined>;

/** The environment validated by `load` (ConfigError, or exits), the absolute data directory, and what every child gets. */
export function loadStackConfig(env: Env = process.env, cwd = process.cwd(), load = loadConfig) {
  const parsed = load(stackEnv, env);
  const dataDir = parsed.TALLY_DATA_DIR ? path.resolve(cwd, parsed.TALLY_DATA_DIR) : path.join(REPO_ROOT, '.data');
  return { env: parsed, dataDir, childBaseEnv: { ...env } };
}

/** The four apps, in start order; ports are docs/DESIGN.md's defaults. */
export const APPS: ReadonlyArray<{ name: AppName; defaultPort: number; portVariable: keyof StackEnv & `${string}_PORT` }> = [
  { name: 'collector', defaultPort: 7401, portVariable: 'COLLECTOR_PORT' },
  { name: 'query-api', defaultPort: 7402, portVariable: 'QUERY_API_PORT' },
  { name: 'bucket-aggregator', defaultPort: 7403, portVariable: 'AGGREGATOR_PORT' },
  { name: 'dynamo-writer', defaultPort: 7404, portVariable: 'WRITER_PORT' },
];

/** How to run one app from its sources; a local stack listens on loopback only (unlike containers) unless HTTP_HOST says otherwise. */
export function appProcessSpec(app: AppName, baseEnv: Env, stackVars: Record<string, string>, nodeBin = process.execPath): ProcessSpec {
  return { name: app, command: nodeBin, args: appArgs(app), cwd: REPO_ROOT, env: { HTTP_HOST: '127.0.0.1', ...baseEnv, ...stackVars } };
}
