import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RateLimitedError, RequestError, UnreachableError } from './errors';
import { allOrAbort, answerAgeMs, backoffMs, startPoller, throttle, type PollerOptions } from './live';

/**
 * startPoller with a run that records when it starts (ms after the poller did) in `times` and throws the error `fails`
 * returns, if any; its onError records the pause before each retry in `errors` and keeps polling unless told not to.
 * The poller comes with its `times` and `errors`.
 */
function recordingPoller(
  o: Pick<PollerOptions, 'intervalMs' | 'retryMs' | 'maxBackoffMs'> & { fails: () => Error | undefined; keepPolling?: boolean },
) {
  const { fails, keepPolling = true, ...opts } = o;
  const times: number[] = [];
  const errors: number[] = [];
  const t0 = Date.now();
  const poller = startPoller({
    ...opts,
    run: async () => {
      times.push(Date.now() - t0);
      const err = fails();
      if (err) throw err;
    },
    onError: (_err, retryInMs) => {
      errors.push(retryInMs);
      return keepPolling;
    },
  });
  return Object.assign(poller, { times, errors });
}

describe('startPoller', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('runs at once, then every interval after the last run settled', async () => {
    let runs = 0;
    const p = startPoller({ intervalMs: 2_500, maxBackoffMs: 10_000, run: async () => void runs++, onError: () => true });
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toBe(1);
    await vi.advanceTimersByTimeAsync(2_499);
    expect(runs).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toBe(2);
    p.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(runs).toBe(2);
  });

  it('never runs twice at once: a slow run delays the next', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let runs = 0;
    const p = startPoller({
      intervalMs: 1_000,
      maxBackoffMs: 1_000,
      run: async () => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        runs++;
        await new Promise((r) => setTimeout(r, 5_000));
        inFlight--;
      },
      onError: () => true,
    });
    p.poke();
    await vi.advanceTimersByTimeAsync(12_000);
    expect(maxInFlight).toBe(1);
    // t=0 run 1 (poked meanwhile) → t=5s run 2 at once → t=10s… run 3 after the 1 s pause at t=11s.
    expect(runs).toBe(3);
    p.stop();
  });

  it('backs off on failures, recovers on success, and stops when told to', async () => {
    let fail = true;
    const p = recordingPoller({ intervalMs: 2_500, maxBackoffMs: 10_000, fails: () => (fail ? new Error('down') : undefined) });
    await vi.advanceTimersByTimeAsync(2_500 + 5_000 + 10_000 + 10_000);
    expect(p.times).toEqual([0, 2_500, 7_500, 17_500, 27_500]);
    expect(p.errors).toEqual([2_500, 5_000, 10_000, 10_000, 10_000]);
    fail = false;
    await vi.advanceTimersByTimeAsync(10_000 + 2_500);
    expect(p.times.slice(5)).toEqual([37_500, 40_000]);
    p.stop();

    const q = recordingPoller({ intervalMs: 100, maxBackoffMs: 100, fails: () => new Error('rejected'), keepPolling: false });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(q.times).toHaveLength(1);
    expect(q.stopped).toBe(true);
  });

  it('retries a failed run sooner than its usual interval', async () => {
    let n = 0;
    const p = recordingPoller({
      intervalMs: 60_000,
      retryMs: 2_500,
      maxBackoffMs: 10_000,
      fails: () => (n++ === 0 ? new Error('down') : undefined),
    });
    await vi.advanceTimersByTimeAsync(62_500);
    expect(p.times).toEqual([0, 2_500, 62_500]);
    p.stop();
  });
});

describe('startPoller: refused requests, Retry-After, skipped runs', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('keeps polling after a refused request: not soon again, but at once when poked (another range)', async () => {
    let range = 'too long';
    // As the shell answers a refused request: keep polling (only a rejected key stops).
    const p = recordingPoller({
      intervalMs: 60_000,
      retryMs: 2_500,
      maxBackoffMs: 10_000,
      fails: () => (range === 'too long' ? new RequestError(400, 'the query reads 2100 items; at most 2000') : undefined),
    });
    await vi.advanceTimersByTimeAsync(30_000);
    expect(p.times).toEqual([0]);
    expect(p.errors).toEqual([60_000]);
    expect(p.stopped).toBe(false);
    range = 'last30d';
    p.poke();
    await vi.advanceTimersByTimeAsync(0);
    expect(p.times).toEqual([0, 30_000]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(p.times).toEqual([0, 30_000, 90_000]);
    p.stop();

    // A fast poller waits the backoff ceiling rather than its interval after a refusal.
    const q = recordingPoller({ intervalMs: 2_500, maxBackoffMs: 10_000, fails: () => new RequestError(400, 'refused') });
    await vi.advanceTimersByTimeAsync(9_999);
    expect(q.times).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(q.times).toHaveLength(2);
    q.stop();
  });

  it('waits at least the Retry-After of a failure, and a poke does not cut it short', async () => {
    let fail = true;
    let retryAfterMs = 5_000;
    const p = recordingPoller({
      intervalMs: 2_500,
      maxBackoffMs: 10_000,
      fails: () => (fail ? new UnreachableError('HTTP 503', { retryAfterMs }) : undefined),
    });
    await vi.advanceTimersByTimeAsync(1_000);
    p.poke();
    await vi.advanceTimersByTimeAsync(3_999);
    expect(p.times).toEqual([0]);
    fail = false;
    await vi.advanceTimersByTimeAsync(1);
    expect(p.times).toEqual([0, 5_000]);
    expect(p.errors).toEqual([5_000]);

    // A poke during a backoff longer than the Retry-After runs when the Retry-After ends.
    fail = true;
    retryAfterMs = 1_000;
    await vi.advanceTimersByTimeAsync(2_500 + 2_500 + 5_000); // fails at 7.5 s, 10 s, 15 s: the backoff is now 10 s
    expect(p.times).toEqual([0, 5_000, 7_500, 10_000, 15_000]);
    p.poke();
    await vi.advanceTimersByTimeAsync(999);
    expect(p.times).toHaveLength(5);
    await vi.advanceTimersByTimeAsync(1);
    expect(p.times.at(-1)).toBe(16_000);
    p.stop();
  });

  it('does not count a skipped run (the tab hidden) as a success', async () => {
    let down = true;
    let hidden = false;
    const ok: number[] = [];
    const failed: number[] = [];
    const p = startPoller({
      intervalMs: 2_500,
      maxBackoffMs: 10_000,
      run: async () => {
        if (hidden) return false;
        if (down) throw new UnreachableError('no connection');
      },
      onSuccess: () => ok.push(Date.now()),
      onError: () => {
        failed.push(Date.now());
        return true;
      },
    });
    await vi.advanceTimersByTimeAsync(0);
    expect([ok.length, failed.length]).toEqual([0, 1]);
    hidden = true;
    await vi.advanceTimersByTimeAsync(30_000);
    expect(ok).toEqual([]);
    hidden = false;
    down = false;
    p.poke();
    await vi.advanceTimersByTimeAsync(0);
    expect(ok).toHaveLength(1);
    p.stop();
  });
});

describe('allOrAbort', () => {
  it('aborts the other requests of a run when one fails, and throws that failure', async () => {
    const aborted: string[] = [];
    const pending = (name: string) => (signal: AbortSignal) =>
      new Promise<string>((_resolve, reject) =>
        signal.addEventListener('abort', () => {
          aborted.push(name);
          reject(new DOMException('aborted', 'AbortError'));
        }),
      );
    const refused = new RequestError(400, 'refused');
    const run = allOrAbort<[string, string, number]>([pending('previous'), pending('months'), async () => Promise.reject(refused)]);
    await expect(run).rejects.toBe(refused);
    expect(aborted.sort()).toEqual(['months', 'previous']);
    await expect(allOrAbort<[number, string]>([async () => 1, async () => 'b'])).resolves.toEqual([1, 'b']);
  });
});

describe("over a store's request rate limit (429)", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('the poller waits out the Retry-After of a rate-limited run, longer than its backoff', async () => {
    let fail = true;
    const p = recordingPoller({
      intervalMs: 2_500,
      maxBackoffMs: 10_000,
      fails: () => (fail ? new RateLimitedError('over the limit', { retryAfterMs: 30_000 }) : undefined),
    });
    await vi.advanceTimersByTimeAsync(29_999);
    expect(p.times).toEqual([0]);
    expect(p.errors).toEqual([30_000]);
    fail = false;
    await vi.advanceTimersByTimeAsync(1);
    expect(p.times).toEqual([0, 30_000]);
    p.stop();
  });
});

describe('backoffMs and answerAgeMs', () => {
  it('doubles from the first retry up to the ceiling', () => {
    expect([0, 1, 2, 3, 4].map((f) => backoffMs(f, 2_500, 10_000))).toEqual([2_500, 2_500, 5_000, 10_000, 10_000]);
  });

  it('measures the age of an answer on the server clock, never negative', () => {
    const asOf = '2023-05-03T10:00:00.000Z';
    const at = Date.parse(asOf);
    expect(answerAgeMs(asOf, 0, at + 2_000)).toBe(2_000);
    // The browser clock is 30 s behind the server: its "now" is corrected forward.
    expect(answerAgeMs(asOf, 30_000, at - 28_000)).toBe(2_000);
    expect(answerAgeMs(asOf, 0, at - 500)).toBe(0);
    expect(answerAgeMs('garbage', 0, at)).toBe(0);
  });
});

describe('throttle', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('calls at once, then at most once per gap, never dropping the last request', async () => {
    const calls: number[] = [];
    const t0 = Date.now();
    const f = throttle(() => calls.push(Date.now() - t0), 10_000);
    f();
    expect(calls).toEqual([0]);
    await vi.advanceTimersByTimeAsync(2_000);
    f();
    f();
    await vi.advanceTimersByTimeAsync(7_999);
    expect(calls).toEqual([0]);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toEqual([0, 10_000]);
    await vi.advanceTimersByTimeAsync(15_000);
    f();
    expect(calls).toEqual([0, 10_000, 25_000]);
    f();
    f.cancel();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toEqual([0, 10_000, 25_000]);
  });
});
