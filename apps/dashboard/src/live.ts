// Polling without overlap: the next run is scheduled when the last one settled, so a slow API is never asked twice
// at once; failures are retried sooner than the interval and back off (2.5 s, 5 s, 10 s, …) up to a ceiling, and one
// success brings the interval back.

export interface PollerOptions {
  /** Pause after a success. */
  intervalMs: number;
  /** Pause after the first failure, doubled after each further one (default: intervalMs). */
  retryMs?: number;
  /** Longest pause after failures. */
  maxBackoffMs: number;
  run: () => Promise<void>;
  /** Called with each failure and the pause before the next try; return false to stop polling (a rejected key). */
  onError: (err: unknown, retryInMs: number) => boolean;
  onSuccess?: () => void;
}

export interface Poller {
  /** Runs now (after the run in progress, if any) instead of waiting for the timer. */
  poke(): void;
  stop(): void;
  readonly stopped: boolean;
}

export function startPoller(opts: PollerOptions): Poller {
  let stopped = false;
  let running = false;
  let pokeAfterRun = false;
  let failures = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const schedule = (ms: number) => {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(tick, ms);
  };

  async function tick(): Promise<void> {
    if (stopped) return;
    if (running) {
      pokeAfterRun = true;
      return;
    }
    running = true;
    clearTimeout(timer);
    let next = opts.intervalMs;
    try {
      await opts.run();
      failures = 0;
      if (!stopped) opts.onSuccess?.();
    } catch (err) {
      failures++;
      next = backoffMs(failures, opts.retryMs ?? opts.intervalMs, opts.maxBackoffMs);
      if (!stopped && !opts.onError(err, next)) stopped = true;
    } finally {
      running = false;
    }
    if (pokeAfterRun) {
      pokeAfterRun = false;
      next = 0;
    }
    schedule(next);
  }

  void tick();
  return {
    poke: () => void tick(),
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    get stopped() {
      return stopped;
    },
  };
}

/** The pause after `failures` failures in a row: `retryMs`, doubled per failure after the first, capped. */
export function backoffMs(failures: number, retryMs: number, maxMs: number): number {
  if (failures <= 0) return retryMs;
  return Math.min(maxMs, retryMs * 2 ** (failures - 1));
}

/**
 * How old an answer stamped `asOf` (server clock) is now, on the browser clock corrected by `clockOffsetMs`
 * (server minus browser). Never negative: a clock estimate a little off must not show "in 1 s".
 */
export function answerAgeMs(asOf: string, clockOffsetMs: number, nowMs: number): number {
  const at = Date.parse(asOf);
  if (!Number.isFinite(at)) return 0;
  return Math.max(0, nowMs + clockOffsetMs - at);
}

export interface Throttled {
  /** Calls now when the last call is `minGapMs` ago, else once when it will be (calls in between merge). */
  (): void;
  cancel(): void;
}

/** At most one call per `minGapMs`, the last request never dropped (a trailing call). */
export function throttle(fn: () => void, minGapMs: number, now: () => number = Date.now): Throttled {
  let last = -Infinity;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const fire = () => {
    timer = undefined;
    last = now();
    fn();
  };
  const call = (() => {
    if (timer !== undefined) return;
    const wait = last + minGapMs - now();
    if (wait <= 0) fire();
    else timer = setTimeout(fire, wait);
  }) as Throttled;
  call.cancel = () => {
    clearTimeout(timer);
    timer = undefined;
  };
  return call;
}
