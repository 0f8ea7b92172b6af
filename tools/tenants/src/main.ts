// Tenant and API key administration: npm run tenants -- <command>. Configured like the apps (DYNAMODB_ENDPOINT,
// DYNAMODB_TABLE, AWS_REGION; delete-store and erase-visitor also Redis); with none of them set, the running
// `npm start` stack's. A key is printed once, when issued; only its sha256 is stored. The commands call the same
// libs/tenants functions as the query API's admin routes.
import { BucketEraser, BucketStore } from '@tally/buckets';
import { loadConfigOrExit, queryApiEnv, rawEnv, sharedEnvShape } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { closeQueues, createQueues, createRedisConnection, QUEUE, queueShards, type RedisConnection, type TallyQueues } from '@tally/queues';
import { loadRulesOrExit } from '@tally/schema';
import { backendEnvOrExit } from '@tally/stack';
import { z } from 'zod';
import { runTenantsCli, type ErasureContext } from './cli';

const argv = process.argv.slice(2);
const needsRedis = argv.includes('delete-store') || argv.includes('erase-visitor');

const env = backendEnvOrExit(rawEnv(), { dynamo: true, redis: needsRedis }, argv);
const config = loadConfigOrExit(z.object({ ...sharedEnvShape, DEDUPE_WINDOW_SECONDS: queryApiEnv.shape.DEDUPE_WINDOW_SECONDS }), env);
const dynamo = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION });
let opened: { redis: RedisConnection; queues: TallyQueues } | undefined;
const erasure = async (): Promise<ErasureContext> => {
  const redis = createRedisConnection(config, { maxRetriesPerRequest: 3 });
  const queues = createQueues(redis, { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
  opened = { redis, queues };
  const rules = loadRulesOrExit(config.RULES_FILE);
  return {
    rules,
    eraser: new BucketEraser({ redis, buckets: new BucketStore({ redis, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS }) }),
    queues: [...queueShards(queues, QUEUE.events), ...queueShards(queues, QUEUE.dynamoWrites)],
    tombstoneSeconds: config.DEDUPE_WINDOW_SECONDS,
  };
};
try {
  process.exitCode = await runTenantsCli(
    argv,
    { dynamo, table: config.DYNAMODB_TABLE },
    { out: (line) => process.stdout.write(`${line}\n`), err: (line) => process.stderr.write(`${line}\n`) },
    erasure,
  );
} finally {
  dynamo.destroy();
  if (opened) {
    await closeQueues(opened.queues);
    await opened.redis.quit().catch(() => undefined);
  }
}
