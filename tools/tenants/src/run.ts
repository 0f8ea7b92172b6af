import { loadConfigOrExit, rawEnv, sharedEnvShape } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { backendEnvOrExit } from '@tally/stack';
import { z } from 'zod';
import { runTenantsCli } from './cli';

/** One tenants command (not a call for help: main.ts answers those without loading this module), on DynamoDB. */
export async function runTenants(argv: readonly string[]): Promise<void> {
  const env = backendEnvOrExit(rawEnv(), { dynamo: true }, argv);
  const config = loadConfigOrExit(z.object({ ...sharedEnvShape }), env);
  const dynamo = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION });
  try {
    process.exitCode = await runTenantsCli(argv, { dynamo, table: config.DYNAMODB_TABLE }, {
      out: (line) => process.stdout.write(`${line}\n`),
      err: (line) => process.stderr.write(`${line}\n`),
    });
  } finally {
    dynamo.destroy();
  }
}
