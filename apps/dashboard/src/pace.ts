// The page's own pacing under its store's request rate limit (QUERY_RATE_LIMIT_PER_SECOND). Every answer the limit
// counts tells it in X-RateLimit-Limit (requests per window), X-RateLimit-Remaining (left in the window) and
// X-RateLimit-Reset (seconds left in the window: on the window's first answer, its length), and a 429 names it in its
// body too. The page's first answer (/v1/store, asked alone) teaches the limit and what is left of the current window,
// and from then on the page waits its turn instead of being refused: today's live numbers first, the rest in order. An
// answer without the headers (the limit is off, or its Redis is down and it counted nothing) unteaches it.

/** A store's request rate limit: `perWindow` requests in each window of `windowMs`. */
export interface RateLimit {
  perWindow: number;
  windowMs: number;
}

interface TurnOptions {
  /** Stops waiting: the turn rejects with the signal's reason (nothing was sent). */
  signal?: AbortSignal | undefined;
  /** Before every waiting request that is not `first` (today's live numbers). */
  first?: boolean | undefined;
  /** A refused request asked again: before the requests of its kind that were not refused (asked after it). */
  again?: boolean | undefined;
}

export interface Pacer {
  /**
   * Resolves when a request may be sent, with the function to call once it is answered (or failed). Until a limit is
   * known, at once (after a Retry-After); then while fewer than `perWindow` requests are on their way or were answered
   * less than `windowMs` ago. The API counts a request between its sending and its answer, so no window of the API's
   * ever counts more than `perWindow` of them, wherever its windows start.
   */
  turn(opts?: TurnOptions): Promise<() => void>;
  /** A 429: nothing is sent for `retryAfterMs`, and from then on the page keeps to `limit` (when the 429 named it). */
  refused(retryAfterMs: number | undefined, limit: RateLimit | undefined): void;
  /**
   * An answer's X-RateLimit-* headers, told while its request still counts as on its way: `perWindow` requests a
   * window, `windowMs` left in the window it was counted in, and `remaining` requests left in that window. The page
   * keeps to `perWindow` in the longest window told for it (the answer of a window's first request tells the whole
   * window), or in the one a 429 named if longer; and, until the told window's end, sends no more than `remaining`
   * less the other requests on their way (which may be counted after it), and less what it sends after it (the least
   * any answer told of that window, as answers may come back in another order than they were counted).
   */
  told(limit: RateLimit, remaining?: number): void;
  /**
   * A 2xx answer without X-RateLimit-*: once an answer has told a limit (the API tells it on every answer it counts),
   * the limit is off or did not count the request (its Redis is down): nothing is kept to until an answer tells one
   * again. A limit learned only from a 429's body (an API that sends no X-RateLimit-*) is kept.
   */
  untold(): void;
}

interface Waiting {
  /** The order of turns: today's numbers asked again, today's, the others asked again, the others; each in turn. */
  rank: number;
  go(): void;
}

export function createPacer(): Pacer {
  let limit: RateLimit | undefined;
  /** An answer told a limit in X-RateLimit-* (the API tells it on every answer it counts). */
  let toldOnce = false;
  /** What the API's current window has left, as told (X-RateLimit-Remaining) less what was sent since, until `until`. */
  let budget: { left: number; until: number } | undefined;
  /** Date.now() before which nothing is sent (a Retry-After). */
  let holdUntil = 0;
  let sending = 0;
  /** When the requests answered lately stop counting (answered + windowMs), soonest first. */
  const counted: number[] = [];
  const queue: Waiting[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;

  /** When the next request may be sent (≥ now); Infinity: when one on its way is answered. */
  function nextTurn(now: number): number {
    while (counted.length > 0 && counted[0]! <= now) counted.shift();
    if (budget && budget.until <= now) budget = undefined;
    let at = Math.max(now, holdUntil);
    if (!limit) return at;
    if (budget && budget.left <= 0) at = Math.max(at, budget.until);
    const over = sending + counted.length - limit.perWindow;
    return over < 0 ? at : Math.max(at, counted[over] ?? Infinity);
  }

  function pump(): void {
    clearTimeout(timer);
    timer = undefined;
    while (queue.length > 0) {
      const now = Date.now();
      const at = nextTurn(now);
      if (at > now) {
        if (at !== Infinity) timer = setTimeout(pump, at - now);
        return;
      }
      sending++;
      if (budget) budget.left--;
      queue.shift()!.go();
    }
  }

  function answered(): void {
    sending--;
    if (limit) {
      counted.push(Date.now() + limit.windowMs);
      counted.sort((a, b) => a - b);
    }
    pump();
  }

  return {
    turn({ signal, first = false, again = false } = {}) {
      return new Promise((resolve, reject) => {
        if (signal?.aborted) {
          reject(signal.reason);
          return;
        }
        const leave = () => {
          queue.splice(queue.indexOf(waiting), 1);
          reject(signal!.reason);
        };
        const waiting: Waiting = {
          rank: (first ? 0 : 2) + (again ? 0 : 1),
          go() {
            signal?.removeEventListener('abort', leave);
            let done = false;
            resolve(() => {
              if (done) return;
              done = true;
              answered();
            });
          },
        };
        signal?.addEventListener('abort', leave, { once: true });
        const at = queue.findIndex((w) => w.rank > waiting.rank);
        queue.splice(at < 0 ? queue.length : at, 0, waiting);
        pump();
      });
    },

    refused(retryAfterMs, learned) {
      if (learned) limit = learned;
      if (retryAfterMs !== undefined) holdUntil = Math.max(holdUntil, Date.now() + retryAfterMs);
    },

    told({ perWindow, windowMs }, remaining) {
      // A window told of the same limit is never shorter than the longest one seen: only the rest of it was told.
      const longest = limit?.perWindow === perWindow ? Math.max(limit.windowMs, windowMs) : windowMs;
      limit = { perWindow, windowMs: longest };
      toldOnce = true;
      if (remaining === undefined) return;
      // The told window ends no sooner than `until` (its Reset is rounded up from the time it was counted).
      const now = Date.now();
      const left = remaining - Math.max(0, sending - 1);
      const until = now + windowMs;
      // Another answer of a window still running: the least of what they told (each is an end no sooner than the true one).
      budget = budget && budget.until > now ? { left: Math.min(budget.left, left), until: Math.min(budget.until, until) } : { left, until };
      pump();
    },

    untold() {
      if (!toldOnce) return;
      limit = undefined;
      budget = undefined;
      pump();
    },
  };
}
