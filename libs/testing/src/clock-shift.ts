import { fileURLToPath } from 'node:url';

/**
 * The preload (`node --import`) that shifts Date in a Node process by TALLY_TEST_CLOCK_OFFSET_MS; every Node
 * process started with the same NODE_OPTIONS and environment (the apps e2e tests start) is shifted alike.
 */
export const CLOCK_SHIFT_PRELOAD_URL = new URL('./clock-shift.preload.mjs', import.meta.url).href;
export const CLOCK_SHIFT_PRELOAD = fileURLToPath(CLOCK_SHIFT_PRELOAD_URL);

const TIME_OF_DAY = /^(\d{2}):(\d{2})(?::(\d{2}))?$/;
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$/;

/**
 * Milliseconds to add to `now` so that a clock reads `at`: `HH:MM` or `HH:MM:SS` (UTC, on the UTC day of `now`)
 * or an ISO instant with a zone (`2027-03-28T00:58:30Z`, for a DST change or a month end).
 */
export function clockOffsetTo(at: string, now: number): number {
  const hm = TIME_OF_DAY.exec(at);
  if (hm) {
    const [h, m, s] = [Number(hm[1]), Number(hm[2]), Number(hm[3] ?? 0)];
    if (h > 23 || m > 59 || s > 59) throw new Error(`${at}: not a time of day (HH:MM or HH:MM:SS, UTC)`);
    const d = new Date(now);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), h, m, s) - now;
  }
  const ms = INSTANT.test(at) ? Date.parse(at) : Number.NaN;
  if (Number.isNaN(ms)) throw new Error(`${at}: expected HH:MM (UTC, today) or an ISO instant with a zone such as 2027-03-28T00:58:30Z`);
  return ms - now;
}

/** The environment variables that make Node processes started with them read the clock shifted by `offsetMs`. */
export function clockShiftEnv(offsetMs: number, nodeOptions = ''): { NODE_OPTIONS: string; TALLY_TEST_CLOCK_OFFSET_MS: string } {
  if (!Number.isSafeInteger(offsetMs)) throw new Error(`clock offset must be an integer of milliseconds, got ${offsetMs}`);
  const flag = `--import=${CLOCK_SHIFT_PRELOAD_URL}`;
  return {
    NODE_OPTIONS: nodeOptions.includes(flag) ? nodeOptions : `${nodeOptions} ${flag}`.trim(),
    TALLY_TEST_CLOCK_OFFSET_MS: String(offsetMs),
  };
}
