/** A number with the unit of a delay or a count after it: `10ms`, `2 s`, `3 attempts`. */
const VOLATILE = /\b\d+(?:\.\d+)?( ?)(ms|milliseconds?|s|seconds?|attempts?|retries|tries|times)\b/gi;

/**
 * What tells a repeated error from a new one (code and message), for "once per distinct error": the numbers in its
 * message that change from one repeat to the next, delays and counts, are left out. ioredis' Sentinel connector names
 * its next delay in the error of each round it found every Sentinel down ("All sentinels are unreachable. Retrying
 * from scratch after 10ms.", then 20ms, 30ms, … up to 1000ms), which made each round news. Addresses and ports stay:
 * another node refusing is another error.
 */
export function errorKey(err: unknown): string {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' ? message : String(err);
  return `${code === undefined || code === null ? '' : String(code)}:${text.replace(VOLATILE, '#$1$2')}`;
}
