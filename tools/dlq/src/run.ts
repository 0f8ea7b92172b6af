import { loadConfigOrExit, rawEnv, toolEnvSchemas } from '@tally/config';
import { backendEnvOrExit, connectToolRedis, STDIO } from '@tally/stack';
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

/** One dlq command (main.ts answers a call for help), on Redis, connected once the command line has been checked. */
export async function runDlq(argv: readonly string[]): Promise<void> {
  let close: (() => Promise<void>) | undefined;
  const connect = async () => {
    const env = backendEnvOrExit(rawEnv(), { redis: true });
    const config = loadConfigOrExit(toolEnvSchemas.dlq, env);
    const tool = await connectToolRedis(config);
    close = tool.close;
    const windowSeconds = await replayGuardWindowSeconds(tool.redis, config.KEY_PREFIX, config.DEDUPE_WINDOW_SECONDS, STDIO.err);
    return { queues: tool.queues, dedupeWindowMs: windowSeconds * 1000, progress };
  };
  try {
    process.exitCode = await runDlqCli(argv, connect, STDIO);
  } finally {
    await close?.();
  }
}
