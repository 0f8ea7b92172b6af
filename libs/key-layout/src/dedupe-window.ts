/**
 * The dedupe window's slack. The aggregator refuses a batch accepted DEDUPE_WINDOW_SECONDS (W) or longer ago, by its
 * own clock against the producer's acceptance time; the batch's dedupe record and the tombstones of a store deletion
 * or visitor erasure (the erased-row entry's time too) must outlive every batch it lets through. They are kept for W
 * plus this slack, so that a batch checked just inside the window still finds them when its apply lands: the check
 * comes before the tenant lookup, the apply's round trip and its stale retries (seconds), and the producer's, the
 * aggregator's and the eraser's clocks differ (NTP keeps them within a second; the collector allows events 300 s in the
 * future, CLOCK_SKEW_SECONDS, as the bound of a host's clock error). 10% of W, at least DEDUPE_SLACK_MIN_SECONDS:
 * 5 minutes for a short window, 2.4 h for the default day, so Redis holds 10% more dedupe records (one per batch of
 * the last W + slack) than a bare window would. Not covered: an apply held longer than the slack after its check (a
 * Redis outage during which the aggregator's connection queues the call).
 */
const DEDUPE_SLACK_FRACTION = 0.1;

/** The slack's floor, in seconds (see DEDUPE_SLACK_FRACTION). */
const DEDUPE_SLACK_MIN_SECONDS = 300;

/** How long a dedupe record or tombstone of the dedupe window `windowSeconds` (W) is kept: W plus its slack, in seconds. */
export function keptForWindow(windowSeconds: number): number {
  return windowSeconds + Math.max(DEDUPE_SLACK_MIN_SECONDS, Math.ceil(windowSeconds * DEDUPE_SLACK_FRACTION));
}

/**
 * The window the aggregators publish in Redis (their DEDUPE_WINDOW_SECONDS at redisKeys `dedupeWindow`), from the
 * value read there: its seconds, or undefined when none is published (or it is no positive whole number).
 */
export function publishedWindowSeconds(value: string | null | undefined): number | undefined {
  const seconds = Number(value ?? Number.NaN);
  return Number.isSafeInteger(seconds) && seconds > 0 ? seconds : undefined;
}
