import { loadConfigOrExit, rawEnv, toolEnvSchemas } from '@tally/config';
import { allQueues, closeQueues, createQueues, createRedisConnection, describeRedisTarget } from '@tally/queues';
import { backendEnvOrExit } from '@tally/stack';
import { Presets, SingleBar } from 'cli-progress';
import { runDlqCli, type Progress } from './cli';

/** A progress bar on stderr for bulk work, only on a terminal (stdout stays clean for pipes). */
const progress = (label: string, total: number): Progress | undefined => {
  if (!process.stderr.isTTY || total < 2) return undefined;
  const bar = new SingleBar(
    { format: `${label} [{bar}] {value}/{total} {percentage}% eta {eta_formatted}`, stream: process.stderr, hideCursor: true },
    Presets.shades_classic,
  );
  bar.start(total, 0);
  return { update: (done) => bar.update(done), stop: () => bar.stop() };
};

/** One dlq command (not a call for help: main.ts answers those without loading this module), on Redis. */
export async function runDlq(argv: readonly string[]): Promise<void> {
  const env = backendEnvOrExit(rawEnv(), { redis: true }, argv);
  const config = loadConfigOrExit(toolEnvSchemas.dlq, env);

  // An operator tool fails fast when Redis is away instead of waiting for it.
  const redis = createRedisConnection(config, {
    maxRetriesPerRequest: 2,
    connectTimeout: 5_000,
    retryStrategy: (attempt) => (attempt > 3 ? null : 250 * attempt),
  });
  let lastRedisError: Error | undefined;
  redis.on('error', (err) => (lastRedisError = err)); // reported once, below
  const queues = createQueues(redis, { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
  for (const q of allQueues(queues)) q.on('error', () => undefined);

  try {
    try {
      await redis.ping();
    } catch (err) {
      process.stderr.write(`tally: cannot reach Redis at ${describeRedisTarget(config)}: ${(lastRedisError ?? (err as Error)).message}\n`);
      process.exit(1);
    }
    process.exitCode = await runDlqCli(
      argv,
      { queues, dedupeWindowMs: config.DEDUPE_WINDOW_SECONDS * 1000, progress },
      {
        out: (line) => process.stdout.write(`${line}\n`),
        err: (line) => process.stderr.write(`${line}\n`),
      },
    );
  } finally {
    await closeQueues(queues).catch(() => undefined);
    redis.disconnect();
  }
}
