// npm run tenants -- <command>: tenant and API key administration (usage.ts). Nothing is imported up front: a call
// for help loads the usage text only, a command loads run.ts (config, the AWS SDK) when it runs.
const argv = process.argv.slice(2);
if (argv.length === 0 || argv[0] === 'help' || argv.includes('--help') || argv.includes('-h'))
  process.stdout.write(`${(await import('./usage')).USAGE}\n`);
else await (await import('./run')).runTenants(argv);
