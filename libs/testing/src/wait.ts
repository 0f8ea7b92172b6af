import { WaitTimeoutError } from './errors';

export interface WaitForOptions {
  /** Default 10 s. */
  timeoutMs?: number;
  /** Default 25 ms. */
  intervalMs?: number;
  /** What was awaited, for the timeout error, e.g. "row STORE1 written". */
  message?: string;
}

export type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>;

/**
 * Polls `fn` until it returns a truthy value and returns that value. A throw from `fn` counts as "not yet";
 * on timeout the last error (or last value) is in the WaitTimeoutError message.
 */
export async function waitFor<T>(fn: () => T | Promise<T>, opts: WaitForOptions = {}): Promise<Truthy<T>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  let last: { value: unknown } | { error: unknown } | undefined;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as Truthy<T>;
      last = { value };
    } catch (error) {
      last = { error };
    }
    if (Date.now() >= deadline) break;
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
  const what = opts.message ?? 'condition';
  const seen =
    last === undefined
      ? ''
      : 'error' in last
        ? `; last error: ${last.error instanceof Error ? last.error.message : String(last.error)}`
        : `; last value: ${safeJson(last.value)}`;
  throw new WaitTimeoutError(`timed out after ${timeoutMs}ms waiting for ${what}${seen}`, {
    cause: last && 'error' in last ? last.error : undefined,
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * `work`, or a rejection naming `what` once it is not done after `ms`: a test step that hangs then fails with its
 * name (and whatever the test prints on failure) instead of a silent test timeout.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms)));
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}
