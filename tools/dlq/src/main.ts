// npm run dlq -- <command>: list, show, replay and purge failed jobs (the dead-letter queues). Configured by
// REDIS_URL (unset: the running `npm start` stack's Redis) or REDIS_CLUSTER_NODES, KEY_PREFIX, QUEUE_SHARDS and
// DEDUPE_WINDOW_SECONDS (the aggregator's, for the events replay guard). Never prompts.
//
// Nothing is imported up front: a call for help loads the usage text only, a command loads run.ts (config, Redis,
// BullMQ) when it runs, so each call loads only what it uses.
const argv = process.argv.slice(2);
if (argv.length === 0 || argv[0] === 'help' || argv.includes('--help') || argv.includes('-h'))
  process.stdout.write(`${(await import('./usage')).USAGE}\n`);
else await (await import('./run')).runDlq(argv);
