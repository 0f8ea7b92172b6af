import { BucketEraser, BucketStore } from '@tally/buckets';
import { loadConfigOrExit, rawEnv, toolEnvSchemas } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import {
  closeQueues,
  createQueues,
  createRedisConnection,
  QUEUE,
  queueShards,
  type RedisConnection,
  type TallyQueues,
} from '@tally/queues';
import { loadRulesOrExit } from '@tally/schema';
import { backendEnvOrExit } from '@tally/stack';
import { runTenantsCli, type ErasureContext } from './cli';

/**
 * One tenants command (not a call for help: main.ts answers those without loading this module), on DynamoDB;
 * delete-store and erase-visitor also on Redis (the same libs/tenants functions as the query API's admin routes).
 */
export async function runTenants(argv: readonly string[]): Promise<void> {
  const needsRedis = argv.includes('delete-store') || argv.includes('erase-visitor');
  const env = backendEnvOrExit(rawEnv(), { dynamo: true, redis: needsRedis }, argv);
  const config = loadConfigOrExit(toolEnvSchemas.tenants, env);
  const dynamo = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION });
  let opened: { redis: RedisConnection; queues: TallyQueues } | undefined;
  const erasure = async (): Promise<ErasureContext> => {
    const redis = createRedisConnection(config, { maxRetriesPerRequest: 3 });
    const queues = createQueues(redis, { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
    opened = { redis, queues };
    const rules = loadRulesOrExit(config.RULES_FILE);
    return {
      rules,
      eraser: new BucketEraser({
        redis,
        buckets: new BucketStore({ redis, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS }),
      }),
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
}
