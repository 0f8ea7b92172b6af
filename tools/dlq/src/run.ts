import { loadConfigOrExit, rawEnv, toolEnvSchemas } from '@tally/config';
import { backendEnvOrExit, connectToolRedis } from '@tally/stack';
import { Presets, SingleBar } from 'cli-progress';
import { runDlqCli, type Progress } from './cli';
import { replayGuardWindowSeconds } from './dedupe-window';

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

  const { redis, queues, close } = await connectToolRedis(config);
  try {
    const err = (line: string) => process.stderr.write(`${line}\n`);
    const windowSeconds = await replayGuardWindowSeconds(redis, config.KEY_PREFIX, config.DEDUPE_WINDOW_SECONDS, err);
    process.exitCode = await runDlqCli(
      argv,
      { queues, dedupeWindowMs: windowSeconds * 1000, progress },
      { out: (line) => process.stdout.write(`${line}\n`), err },
    );
  } finally {
    await close();
  }
}
