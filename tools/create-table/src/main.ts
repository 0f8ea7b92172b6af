// npm run create-table: creates the DynamoDB table Tally writes to (idempotent), configured like the apps
// (DYNAMODB_ENDPOINT, DYNAMODB_TABLE, AWS_REGION). Prints one line; exit 1 with one line on stderr on failure.
import { loadConfigOrExit, toolEnvSchemas } from '@tally/config';
import { DynamoUnreachableError, TableError, createDynamoClient, describeEndpoint, ensureTable } from '@tally/dynamo';

const USAGE = `usage: npm run create-table   (in the tools image: create-table)
Creates the DynamoDB table Tally writes to, DYNAMODB_TABLE (default tally: pk S HASH, sk S RANGE, on-demand), at
DYNAMODB_ENDPOINT, or in AWS DynamoDB in AWS_REGION when DYNAMODB_ENDPOINT is unset. Idempotent: a table that exists
with the right keys is left as it is; one with other keys is an error (exit 1). npm start creates its own table.
`;
const args = process.argv.slice(2);
if (args.length > 0) {
  const help = args.length === 1 && ['--help', '-h', 'help'].includes(args[0]!);
  (help ? process.stdout : process.stderr).write(help ? USAGE : `tally: create-table takes no arguments (got ${args.join(' ')})\n${USAGE}`);
  process.exit(help ? 0 : 2);
}

const config = loadConfigOrExit(toolEnvSchemas['create-table']);
const client = createDynamoClient({ endpoint: config.DYNAMODB_ENDPOINT, region: config.AWS_REGION });
const table = config.DYNAMODB_TABLE;

try {
  const where = await describeEndpoint(client);
  const { created } = await ensureTable(client, table);
  process.stdout.write(
    created
      ? `tally: created table "${table}" at ${where} (pk S HASH, sk S RANGE, on-demand)\n`
      : `tally: table "${table}" already exists at ${where} with the right keys\n`,
  );
} catch (err) {
  const known = err instanceof TableError || err instanceof DynamoUnreachableError;
  process.stderr.write(
    `tally: ${known ? err.message : `cannot create table "${table}": ${err instanceof Error ? err.message : String(err)}`}\n`,
  );
  process.exitCode = 1;
} finally {
  client.destroy();
}
