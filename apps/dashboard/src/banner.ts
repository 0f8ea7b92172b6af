// The shell's banner, in words: why the numbers on screen may not be the latest, and when they will be asked again.
import type { Locale } from './format';

export interface BannerState {
  /** A request found Tally unreachable (no answer, a 5xx): "Tally is not reachable", whatever else failed. */
  unreachable: boolean;
  /**
   * A request was refused by the store's request rate limit (a 429; Tally answered): the soonest next try in ms
   * (≤ 0: being tried now), and the limit when the API named it.
   */
  rateLimited?: { retryInMs: number; requestsPerSecond?: number | undefined } | undefined;
  /** When the numbers shown are from (formatted), if any are shown. */
  shownAt?: string | undefined;
}

/** The banner's text, or undefined when there is nothing to say (the banner is hidden). */
export function bannerText(state: BannerState, locale: Locale): string | undefined {
  const shown = state.shownAt ? ` The numbers below are from ${state.shownAt}.` : '';
  if (state.unreachable) return `Tally is not reachable; retrying.${shown}`;
  if (!state.rateLimited) return undefined;
  const { retryInMs, requestsPerSecond } = state.rateLimited;
  const limit =
    requestsPerSecond === undefined
      ? ''
      : ` (Tally allows it ${new Intl.NumberFormat(locale, { maximumFractionDigits: 2 }).format(requestsPerSecond)} a second, over all its keys and open pages)`;
  const when = retryInMs > 0 ? `retrying in ${Math.ceil(retryInMs / 1000)} s` : 'retrying';
  return `Too many requests for this store right now${limit}; ${when}.${shown}`;
}
