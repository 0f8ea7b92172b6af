import type { ApiClient, StoreAnswer } from './api';
import { RequestError } from './errors';
import type { Locale } from './format';
import { startPoller, type Poller } from './live';

/** Failed requests are retried after 2.5 s, then 5 s, then every 10 s, whatever their usual interval. */
export const RETRY_MS = 2_500;
export const MAX_BACKOFF_MS = 10_000;

/** What every view of a signed-in store gets from the shell. */
export interface ViewContext {
  api: ApiClient;
  store: StoreAnswer;
  locale: Locale;
  status: StatusReporter;
}

/**
 * Where views report how their requests went. The shell turns it into the banner ("Tally is not reachable;
 * retrying", or "Too many requests for this store right now; retrying in 1 s"), the freshness mark ("updated 2 s
 * ago") and signing out when the key stops working.
 */
export interface StatusReporter {
  /** A request of `source` succeeded. */
  ok(source: string): void;
  /**
   * A request of `source` failed; it is tried again in `retryInMs`. Returns whether to keep polling: yes when Tally
   * is unreachable (it will come back), the store is over its request rate limit (the next window answers), or the
   * request itself was refused (the next one, another range, may be answered), no when the key was rejected (the
   * shell signs out).
   */
  failed(source: string, err: unknown, retryInMs: number): boolean;
  /** The live numbers shown are as of `asOf` (server time). */
  fresh(asOf: string): void;
}

/** A mounted view; `destroy` stops its polling and removes its charts. */
export interface View {
  destroy(): void;
}

/** Polls `run` for a view, reporting as `source` to the shell; `refused` shows why the API refused a request. */
export function pollView(
  ctx: ViewContext,
  source: string,
  intervalMs: number,
  refused: (err: RequestError) => void,
  run: () => Promise<void | false>,
): Poller {
  return startPoller({
    intervalMs,
    retryMs: RETRY_MS,
    maxBackoffMs: MAX_BACKOFF_MS,
    run,
    onSuccess: () => ctx.status.ok(source),
    onError: (err, retryInMs) => {
      if (err instanceof RequestError) refused(err);
      return ctx.status.failed(source, err, retryInMs);
    },
  });
}
