// Polling without overlap: the next run is scheduled when the last one settled, so a slow API is never asked twice
// at once; failures are retried sooner than the interval and back off (2.5 s, 5 s, 10 s, …) up to a ceiling, and one
// success brings the interval back. A refused request is not retried soon (it would be refused again), and a
// Retry-After is waited out, pokes included.

/** What a failure may say about the next try; the dashboard's errors (errors.ts) carry these. */
interface RetryHint {
  /** The request itself was refused (a 400): the same again soon would be refused again. */
  readonly refused?: boolean;
  /** The server asked to be left alone this long (Retry-After). */
  readonly retryAfterMs?: number;
}

export interface PollerOptions {
  /** Pause after a success. */
  intervalMs: number;
  /** Pause after the first failure, doubled after each further one (default: intervalMs). */
  retryMs?: number;
  /** Longest pause after failures. */
  maxBackoffMs: number;
  /** Returns false when it skipped its run (nothing asked, the tab hidden): neither a success nor a failure. */
  run: () => Promise<void | false>;
  /**
   * Called with each failure and the pause before the next try; return false to stop polling (a rejected key). A
   * failure that is `refused` (RetryHint) is tried again after the longer of the interval and the backoff ceiling,
   * or at a poke (the request changed); one with `retryAfterMs` not before that, even when poked.
   */
  onError: (err: unknown, retryInMs: number) => boolean;
  onSuccess?: () => void;
}

export interface Poller {
  /** Runs now (after the run in progress, if any, and not before a Retry-After) instead of waiting for the timer. */
  poke(): void;
  stop(): void;
  readonly stopped: boolean;
}

export function startPoller(opts: PollerOptions): Poller {
  let stopped = false;
  let running = false;
  let pokeAfterRun = false;
  let failures = 0;
  /** Date.now() before which the server asked not to be asked again (Retry-After). */
  let notBefore = 0;
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
    // A poke during a Retry-After wait: run when it ends (the timer may be set later, after a backoff).
    if (Date.now() < notBefore) {
      schedule(notBefore - Date.now());
      return;
    }
    running = true;
    clearTimeout(timer);
    let next = opts.intervalMs;
    try {
      // A skipped run says nothing about the API: it must not clear a "not reachable" it did not check.
      if ((await opts.run()) !== false) {
        failures = 0;
        if (!stopped) opts.onSuccess?.();
      }
    } catch (err) {
      failures++;
      const hint = (typeof err === 'object' && err !== null ? err : {}) as RetryHint;
      next = hint.refused
        ? Math.max(opts.intervalMs, opts.maxBackoffMs)
        : backoffMs(failures, opts.retryMs ?? opts.intervalMs, opts.maxBackoffMs);
      if (hint.retryAfterMs !== undefined && hint.retryAfterMs > 0) {
        notBefore = Date.now() + hint.retryAfterMs;
        next = Math.max(next, hint.retryAfterMs);
      }
      if (!stopped && !opts.onError(err, next)) stopped = true;
    } finally {
      running = false;
    }
    if (pokeAfterRun) {
      pokeAfterRun = false;
      next = Math.max(0, notBefore - Date.now());
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

/**
 * Runs `tasks` together, with one AbortSignal: the first failure aborts the others (their requests stop at once, so
 * the retry of the run never overlaps them) and is the one thrown.
 */
export function allOrAbort<T extends readonly unknown[]>(tasks: { [K in keyof T]: (signal: AbortSignal) => Promise<T[K]> }): Promise<T> {
  const abort = new AbortController();
  const started = tasks.map((task: (signal: AbortSignal) => Promise<unknown>) =>
    task(abort.signal).catch((err: unknown) => {
      abort.abort();
      throw err;
    }),
  );
  return Promise.all(started) as Promise<unknown> as Promise<T>;
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
export function throttle(fn: () => void, minGapMs: number): Throttled {
  let last = -Infinity;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const fire = () => {
    timer = undefined;
    last = Date.now();
    fn();
  };
  const call = (() => {
    if (timer !== undefined) return;
    const wait = last + minGapMs - Date.now();
    if (wait <= 0) fire();
    else timer = setTimeout(fire, wait);
  }) as Throttled;
  call.cancel = () => {
    clearTimeout(timer);
    timer = undefined;
  };
  return call;
}
