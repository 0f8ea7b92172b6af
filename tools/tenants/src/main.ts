// Tenant and API key administration: npm run tenants -- <command>. Configured like the apps (DYNAMODB_ENDPOINT,
// DYNAMODB_TABLE, AWS_REGION). A key is printed once, when issued; only its sha256 is stored.
import { loadConfigOrExit, sharedEnvShape } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { z } from 'zod';
import { runTenantsCli } from './cli';

const config = loadConfigOrExit(z.object({ ...sharedEnvShape }));
const dynamo = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION });
try {
  process.exitCode = await runTenantsCli(process.argv.slice(2), { dynamo, table: config.DYNAMODB_TABLE }, {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
  });
} finally {
  dynamo.destroy();
}
