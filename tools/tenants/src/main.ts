// Tenant and API key administration: npm run tenants -- <command>. Configured like the apps (DYNAMODB_ENDPOINT,
// DYNAMODB_TABLE, AWS_REGION); with none of them set, the running `npm start` stack's DynamoDB and table.
// A key is printed once, when issued; only its sha256 is stored.
//
// Nothing is imported up front: a call for help loads the usage text only, a command loads run.ts (config, the AWS
// SDK) when it runs.
const argv = process.argv.slice(2);
if (argv.length === 0 || argv[0] === 'help' || argv.includes('--help') || argv.includes('-h'))
  process.stdout.write(`${(await import('./usage')).USAGE}\n`);
else await (await import('./run')).runTenants(argv);
