import type { Logger } from 'pino';
import { errorKey } from './error-key';

export interface LogThrottleOptions {
  /** One line per key per window; repeats inside it are counted and reported with the next line. Default 10 s. */
  windowMs?: number;
  /** Keys remembered at most (a flood of distinct keys must not grow memory); default 1000. */
  maxKeys?: number;
  now?: () => number;
}

export interface ThrottledLog {
  /** Logs `msg` at `level` unless a line with the same key was logged within the window; the next line says how many were dropped. */
  log(level: 'warn' | 'error' | 'info', key: string, obj: Record<string, unknown>, msg: string): boolean;
}

/**
 * Rate-limits repeated log lines: a flood of the same warning (a Redis outage, a burst of bad keys) gives one
 * line per key and window, with `suppressed` counting the lines dropped since the last one.
 */
export function throttleLog(log: Pick<Logger, 'warn' | 'error' | 'info'>, opts: LogThrottleOptions = {}): ThrottledLog {
  const windowMs = opts.windowMs ?? 10_000;
  const maxKeys = opts.maxKeys ?? 1_000;
  const now = opts.now ?? Date.now;
  const seen = new Map<string, { at: number; suppressed: number }>();
  return {
    log(level, key, obj, msg) {
      const t = now();
      const last = seen.get(key);
      if (last && t - last.at < windowMs) {
        last.suppressed++;
        return false;
      }
      if (!last && seen.size >= maxKeys) seen.delete(seen.keys().next().value!);
      seen.set(key, { at: t, suppressed: 0 });
      log[level](last?.suppressed ? { ...obj, suppressed: last.suppressed } : obj, msg);
      return true;
    },
  };
}

/** Anything that emits 'error': an ioredis connection, a BullMQ worker or queue. */
export interface ErrorEmitter {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

export interface EmitterErrorLog extends ThrottledLog {
  /**
   * Logs these emitters' errors too, through the same throttle. Call it as each one is made: one with no 'error'
   * listener prints every reconnect attempt bare (ioredis' "Unhandled error event", BullMQ's console.error).
   */
  watch(emitters: readonly (ErrorEmitter | undefined)[]): void;
}

/**
 * Logs the 'error' events of connections and workers without flooding: while Redis is down every reconnect
 * attempt of every connection emits one, so each distinct error (errorKey: its code and message, less the delays
 * and counts that change at each attempt) is logged once per window (no stack: these are expected outages, not bugs).
 */
export function logEmitterErrors(
  log: Pick<Logger, 'warn' | 'error' | 'info'>,
  source: string,
  emitters: readonly (ErrorEmitter | undefined)[],
  opts: LogThrottleOptions & { level?: 'warn' | 'error' } = {},
): EmitterErrorLog {
  const throttled = throttleLog(log, opts);
  const watch = (list: readonly (ErrorEmitter | undefined)[]) => {
    for (const emitter of list) {
      emitter?.on('error', (err) => {
        const code = (err as { code?: string }).code;
        throttled.log(
          opts.level ?? 'warn',
          `${source}:${errorKey(err)}`,
          { source, err: { message: err.message, code } },
          `${source} error`,
        );
      });
    }
  };
  watch(emitters);
  return { log: throttled.log, watch };
}
