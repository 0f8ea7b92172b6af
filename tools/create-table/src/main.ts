// npm run create-table (USAGE says what it does). Prints one line; on failure one line on stderr and exit 1 (3: no TTL).
import { loadConfigOrExit, toolEnvSchemas } from '@tally/config';
import { DynamoUnreachableError, TableError, createDynamoClient, describeEndpoint, ensureTable, type TableWarning } from '@tally/dynamo';

const USAGE = `usage: npm run create-table   (in the tools image: create-table)
Creates the DynamoDB table Tally writes to, DYNAMODB_TABLE (default tally: pk S HASH, sk S RANGE, on-demand), at
DYNAMODB_ENDPOINT, or in AWS DynamoDB in AWS_REGION (default us-east-1; credentials from the AWS SDK's default
chain) when DYNAMODB_ENDPOINT is unset, and turns its TTL on for expiresAt. Idempotent: a table that exists with the
right keys is left as it is; one with other keys is an error (exit 1). When DynamoDB refuses to turn TTL on (it is
on another attribute, or was changed within the last hour) it says so and exits 3. npm start creates its own table.
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
  const warnings: TableWarning[] = [];
  const { created, ttl } = await ensureTable(client, table, { warn: (w) => warnings.push(w) });
  process.stdout.write(
    created
      ? `tally: created table "${table}" at ${where} (pk S HASH, sk S RANGE, on-demand)\n`
      : `tally: table "${table}" already exists at ${where} with the right keys\n`,
  );
  for (const w of warnings) process.stderr.write(`tally: ${w.message}\n`);
  if (ttl.on === false) process.exitCode = 3;
} catch (err) {
  const known = err instanceof TableError || err instanceof DynamoUnreachableError;
  process.stderr.write(
    `tally: ${known ? err.message : `cannot create table "${table}": ${err instanceof Error ? err.message : String(err)}`}\n`,
  );
  process.exitCode = 1;
} finally {
  client.destroy();
}
