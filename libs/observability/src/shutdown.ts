import type { Logger } from 'pino';
import { TimedOut, within } from './within';

export interface ShutdownStep {
  /** Shown in the logs, e.g. `close http`, `close workers`, `quit redis`. */
  name: string;
  run: () => Promise<unknown>;
  /** Deadline for this step; after it the next step starts. Default 10 s. */
  timeoutMs?: number;
}

export interface InstallShutdownOptions {
  /** Default SIGTERM and SIGINT. */
  signals?: NodeJS.Signals[];
  /** Default `process.exit`. */
  exit?: (code: number) => void;
}

export const DEFAULT_STEP_TIMEOUT_MS = 10_000;

/**
 * Runs the steps in order, each with its deadline, logging each outcome. Never throws: resolves true when every
 * step finished in time, false when one failed or overran (the remaining steps still run).
 */
export async function runShutdown(log: Logger, steps: readonly ShutdownStep[]): Promise<boolean> {
  let ok = true;
  for (const step of steps) {
    const timeoutMs = step.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS;
    const started = Date.now();
    try {
      await within(Promise.resolve().then(step.run), timeoutMs, 'step overran its deadline');
      log.info({ step: step.name, ms: Date.now() - started }, 'shutdown step done');
    } catch (err) {
      ok = false;
      if (err instanceof TimedOut) log.error({ step: step.name, timeoutMs }, 'shutdown step overran its deadline');
      else log.error({ step: step.name, err }, 'shutdown step failed');
    }
  }
  return ok;
}

/**
 * Installs one guarded SIGTERM/SIGINT handler: the first signal runs the steps (see runShutdown), then exits 0,
 * or 1 when a step failed or overran. Signals that arrive while closing are logged and ignored.
 * Returns `isShuttingDown()`, for readiness checks and loops that should stop taking work.
 */
export function installShutdown(log: Logger, steps: readonly ShutdownStep[], opts: InstallShutdownOptions = {}): () => boolean {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  let shuttingDown = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (shuttingDown) {
      log.warn({ signal }, 'already shutting down; signal ignored');
      return;
    }
    shuttingDown = true;
    log.info({ signal, steps: steps.map((s) => s.name) }, 'shutting down');
    void runShutdown(log, steps).then((ok) => {
      log.info({ exitCode: ok ? 0 : 1 }, 'shutdown complete');
      exit(ok ? 0 : 1);
    });
  };
  for (const signal of opts.signals ?? ['SIGTERM', 'SIGINT']) process.on(signal, onSignal);
  return () => shuttingDown;
}
