// Tenant and API key administration: npm run tenants -- <command>. Configured like the apps (DYNAMODB_ENDPOINT,
// DYNAMODB_TABLE, AWS_REGION); with none of them set, the running `npm start` stack's DynamoDB and table.
// A key is printed once, when issued; only its sha256 is stored.
import { loadConfigOrExit, rawEnv, sharedEnvShape } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { backendEnvOrExit } from '@tally/stack';
import { z } from 'zod';
import { runTenantsCli } from './cli';

const argv = process.argv.slice(2);

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
