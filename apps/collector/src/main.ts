import { checkTable, DynamoUnreachableError } from '@tally/dynamo';
import { collectorEnv, loadConfigOrExit } from '@tally/config';
import { closeHttp, createLogger, installShutdown } from '@tally/observability';
import { closeQueues } from '@tally/queues';
import { PRODUCER_COMMAND_TIMEOUT_MS } from '@tally/intake';
import { loadRulesOrExit } from '@tally/schema';
import { buildApp } from './app';
import { closeRedis, createCollectorDeps } from './deps';

// Composition root: config → deps → app → listen → shutdown. Nothing else reads the environment.
const config = loadConfigOrExit(collectorEnv);
const log = createLogger({ name: 'collector', level: config.LOG_LEVEL });

const rules = loadRulesOrExit(config.RULES_FILE, log);

const resources = createCollectorDeps(config, log, rules);
const { queues, dynamo, backpressure } = resources;

try {
  // A TTL that is off or on another attribute is logged (and tally_dynamodb_ttl_enabled 0), not fatal.
  await checkTable(dynamo, config.DYNAMODB_TABLE, { warn: ({ message, ...w }) => log.warn(w, message), registry: resources.deps.registry });
} catch (err) {
  // A missing table is a mistake to fix now; an unreachable DynamoDB must not stop intake (cached keys serve).
  if (!(err instanceof DynamoUnreachableError)) {
    process.stderr.write(`tally: ${(err as Error).message}\n`);
    process.exit(1);
  }
  log.warn({ err: err.message }, 'DynamoDB is unreachable at start-up; API keys cannot be checked until it answers');
}

const app = await buildApp(resources.deps);
backpressure.start();
await app.listen({ host: config.HTTP_HOST, port: config.HTTP_PORT });
const address = app.server.address();
const port = typeof address === 'object' && address ? address.port : config.HTTP_PORT;
log.info(
  {
    port,
    host: config.HTTP_HOST,
    table: config.DYNAMODB_TABLE,
    ...(config.REDIS_WAIT_REPLICAS > 0 && { waitReplicas: config.REDIS_WAIT_REPLICAS }),
  },
  `collector listening on port ${port}`,
);

// A request in flight may be in its enqueue: one Redis command (the producer's deadline, libs/intake
// PRODUCER_COMMAND_TIMEOUT_MS), then with REDIS_WAIT_REPLICAS up to two waits for replicas. Cut before it answers, a
// request without an Idempotency-Key whose batch Redis may hold never hears the key it was given (503 idempotencyKey),
// and its retry counts the batch twice: so it gets that long, and a second.
const httpGraceMs = PRODUCER_COMMAND_TIMEOUT_MS + (config.REDIS_WAIT_REPLICAS > 0 ? 2 * config.REDIS_WAIT_TIMEOUT_MS : 0) + 1_000;

installShutdown(log, [
  {
    name: 'close http',
    run: async () => {
      resources.beginClosing();
      await closeHttp(app, httpGraceMs); // in-flight requests finish (httpGraceMs at most); new ones get 503
    },
    timeoutMs: Math.max(10_000, httpGraceMs + 2_000),
  },
  {
    name: 'close queues',
    run: async () => {
      backpressure.stop();
      await closeQueues(queues);
    },
  },
  { name: 'quit redis', run: async () => void (await closeRedis(resources)), timeoutMs: 3_000 },
  { name: 'close dynamodb client', run: async () => dynamo.destroy() },
]);
