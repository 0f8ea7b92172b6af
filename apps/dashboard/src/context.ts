import type { ApiClient, StoreAnswer } from './api';
import type { Locale } from './format';

/** What every view of a signed-in store gets from the shell. */
export interface ViewContext {
  api: ApiClient;
  store: StoreAnswer;
  locale: Locale;
  status: StatusReporter;
}

/**
 * Where views report how their requests went. The shell turns it into the banner ("Tally is not reachable;
 * retrying"), the freshness mark ("updated 2 s ago") and signing out when the key stops working.
 */
export interface StatusReporter {
  /** A request of `source` succeeded. */
  ok(source: string): void;
  /**
   * A request of `source` failed. Returns whether to keep polling: yes when Tally is unreachable (it will come
   * back) or the request itself was refused (the next one, another range, may be answered), no when the key was
   * rejected (the shell signs out).
   */
  failed(source: string, err: unknown): boolean;
  /** The live numbers shown are as of `asOf` (server time). */
  fresh(asOf: string): void;
}

/** A mounted view; `destroy` stops its polling and removes its charts. */
export interface View {
  destroy(): void;
}
