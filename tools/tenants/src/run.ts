import { BucketEraser, BucketStore } from '@tally/buckets';
import { loadConfigOrExit, rawEnv, toolEnvSchemas } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { QUEUE, queueShards } from '@tally/queues';
import { loadRulesOrExit } from '@tally/schema';
import { backendEnvOrExit, connectToolRedis } from '@tally/stack';
import { runTenantsCli } from './cli';

/**
 * One tenants command (not a call for help: main.ts answers those without loading this module), on DynamoDB;
 * delete-store and erase-visitor also on Redis (the same libs/tenants functions as the query API's admin routes).
 */
export async function runTenants(argv: readonly string[]): Promise<void> {
  const needsRedis = argv.includes('delete-store') || argv.includes('erase-visitor');
  const config = loadConfigOrExit(toolEnvSchemas.tenants, backendEnvOrExit(rawEnv(), { dynamo: true, redis: needsRedis }, argv));
  const dynamo = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION });
  let closeRedis: (() => Promise<unknown>) | undefined;
  try {
    process.exitCode = await runTenantsCli(
      argv,
      { dynamo, table: config.DYNAMODB_TABLE },
      { out: (line) => process.stdout.write(`${line}\n`), err: (line) => process.stderr.write(`${line}\n`) },
      async () => {
        const { redis, queues, close } = await connectToolRedis(config);
        closeRedis = close;
        const rules = loadRulesOrExit(config.RULES_FILE);
        const buckets = new BucketStore({ redis, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
        return {
          rules,
          eraser: new BucketEraser({ redis, buckets }),
          queues: [QUEUE.events, QUEUE.dynamoWrites].flatMap((name) => queueShards(queues, name)),
          tombstoneSeconds: config.DEDUPE_WINDOW_SECONDS,
        };
      },
    );
  } finally {
    dynamo.destroy();
    await closeRedis?.();
  }
}
