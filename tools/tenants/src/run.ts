import { BucketEraser, BucketStore } from '@tally/buckets';
import { loadConfigOrExit, rawEnv, toolEnvSchemas } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { storeWorkQueues } from '@tally/queues';
import { loadRulesOrExit } from '@tally/schema';
import { backendEnvOrExit, connectToolRedis, STDIO } from '@tally/stack';
import { runTenantsCli } from './cli';

/** A logger for loadRulesOrExit that says nothing: the rules' warnings are of no use to delete-store. */
const QUIET = { warn: () => undefined };

/**
 * One tenants command (main.ts answers a call for help), on DynamoDB, and on Redis for delete-store, erase-visitor
 * and set --history-months: resolved once the command line has been checked, Redis connected only when used.
 */
export async function runTenants(argv: readonly string[]): Promise<void> {
  let dynamo: ReturnType<typeof createDynamoClient> | undefined;
  let tool: ReturnType<typeof connectToolRedis> | undefined;
  try {
    process.exitCode = await runTenantsCli(argv, STDIO, ({ redis }) => {
      const config = loadConfigOrExit(toolEnvSchemas.tenants, backendEnvOrExit(rawEnv(), { dynamo: true, redis }));
      dynamo = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION });
      const connect = () => (tool ??= connectToolRedis(config));
      return {
        db: { dynamo, table: config.DYNAMODB_TABLE },
        rules: () => loadRulesOrExit(config.RULES_FILE),
        erasure: async ({ quiet = false } = {}) => {
          const { redis: client, queues } = await connect();
          const rules = loadRulesOrExit(config.RULES_FILE, quiet ? QUIET : undefined);
          const buckets = new BucketStore({ redis: client, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
          return {
            rules,
            eraser: new BucketEraser({ redis: client, buckets }),
            ...storeWorkQueues(queues),
            // At least the aggregators' window, which they publish: it is read at each deletion and erasure.
            tombstoneSeconds: config.DEDUPE_WINDOW_SECONDS,
            onWindowDiffers: (line: string) => STDIO.err(`tally: ${line}`),
          };
        },
        maintenance: async () => (await connect()).queues,
      };
    });
  } finally {
    dynamo?.destroy();
    await (await tool?.catch(() => undefined))?.close();
  }
}
