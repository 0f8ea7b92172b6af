import { metricsOn, within } from '@tally/observability';
import { Counter, Gauge, type Registry } from 'prom-client';

export type AggregatorMetrics = ReturnType<typeof createAggregatorMetrics>;

export function createAggregatorMetrics(registry: Registry) {
  const { counter, gauge, histogram } = metricsOn(registry);
  return {
    batchesApplied: counter('tally_batches_applied_total', 'Event batches applied to Redis buckets'),
    eventsApplied: counter('tally_events_applied_total', 'Events applied to Redis buckets'),
    duplicateBatches: counter('tally_batches_duplicate_total', 'Redelivered batches skipped by the batch-id dedupe'),
    batchesRejected: counter('tally_batches_rejected_total', 'Batches moved to the failed set as unprocessable', ['reason']),
    batchWaits: counter(
      'tally_batch_waits_total',
      "Events jobs delayed without spending an attempt: fewer Redis replicas than REDIS_WAIT_REPLICAS held the apply in time (reason replicas), or the store's Redis was unavailable (reason redis: down, loading, full, CLUSTERDOWN, the slot mid-migration)",
      ['reason'],
    ),
    fieldsDropped: counter(
      'tally_rolled_up_fields_dropped_total',
      "Fields of rolled-up batches left out because their metric is not one of these rules' (rolled up by other rules: a rolling deploy of RULES_FILE)",
    ),
    batchesDropped: counter('tally_batches_dropped_total', 'Batches dropped whole because their store was deleted (its tombstone)'),
    applySeconds: histogram(
      'tally_apply_duration_seconds',
      'Time to roll up and apply one batch',
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    ),
    bucketsSealed: counter('tally_buckets_sealed_total', 'Buckets sealed'),
    bucketsFolded: counter('tally_buckets_folded_total', 'Buckets folded completely into row outboxes'),
    rowsFolded: counter('tally_rows_folded_total', 'Row buckets folded into outboxes'),
    sealLag: gauge(
      'tally_seal_lag_seconds',
      'How late the last sealer tick that sealed a bucket ran after it was due (its job scheduler time): the sealer falling behind, not how long a store was idle',
    ),
    foldSeconds: histogram(
      'tally_fold_duration_seconds',
      'Time to fold one store’s sealed buckets',
      [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    ),
    sealTickSeconds: histogram(
      'tally_seal_tick_duration_seconds',
      'Time of one sealer tick over one work-set shard (its active stores)',
      [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    ),
    flushesScheduled: counter(
      'tally_flushes_scheduled_total',
      'Row flush jobs enqueued to dynamo-writes; a job still waiting when a later tick finds its row due again is added again (a no-op under its job id) and counted again',
    ),
    sealStoreFailures: counter(
      'tally_seal_store_failures_total',
      'Stores a sealer tick set aside because their visit, fold or backlog publish failed (stage; the rest of their batch went on): a corrupt key, a Redis node refusing writes',
      ['stage'],
    ),
  };
}

/** Backlog as Redis holds it now, summed over stores. */
export interface Backlog {
  dirtyRows: number;
  outboxEntries: number;
  oldestUnfoldedAgeSeconds: number;
  flushLagSeconds: number;
}

/**
 * Gauges read at scrape time from Redis (one bounded read per work-set shard of the totals the sealer and the
 * writer publish per store, and each apply's registration moves), so every replica reports the same value whoever
 * ran the last seal, and a scrape costs the same with ten stores or ten thousand. Values are as of each store's last
 * apply, seal tick or flush: a count applied to an open bucket counts from its apply on, before any tick. A
 * scrape while Redis is unreachable or slow answers within `timeoutMs` with the previous values, and
 * `tally_backlog_metrics_errors_total` counts it.
 */
export function registerBacklogGauges(registry: Registry, read: () => Promise<Backlog>, timeoutMs = 1_000) {
  let last: Backlog = { dirtyRows: 0, outboxEntries: 0, oldestUnfoldedAgeSeconds: 0, flushLagSeconds: 0 };
  const misses = new Counter({
    name: 'tally_backlog_metrics_errors_total',
    help: 'Scrapes that could not read the backlog (Redis down or slow); the backlog gauges then show the last values read.',
    registers: [registry],
    // The registry reads the metrics concurrently: this one waits for the scrape's read, so it shows its miss.
    async collect() {
      await current();
    },
  });
  // One read at a time, shared by the four gauges and by scrapes within 250 ms of it. The aggregator's connection
  // queues commands while Redis is away, so a read can wait for as long as the outage: a scrape waits at most
  // `timeoutMs` for it, then answers the last values (the read still pending is shared by the next scrapes).
  let reading: Promise<Backlog> | undefined;
  let scrape: Promise<Backlog> | undefined;
  const current = () =>
    (scrape ??= within(
      (reading ??= read()
        .then((b) => (last = b))
        .finally(() => setTimeout(() => (reading = undefined), 250))),
      timeoutMs,
      'no backlog read',
    )
      .catch(() => {
        misses.inc();
        return last;
      })
      .finally(() => (scrape = undefined)));
  const gauge = (name: string, help: string, pick: (b: Backlog) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        this.set(pick(await current()));
      },
    });
  gauge('tally_outbox_rows', 'Rows with counts folded but not yet written to DynamoDB', (b) => b.dirtyRows);
  gauge('tally_outbox_entries', 'Outbox entries (row, bucket, day, metric) folded but not yet written to DynamoDB', (b) => b.outboxEntries);
  gauge(
    'tally_oldest_unfolded_bucket_age_seconds',
    'Age of the oldest bucket holding counts not yet folded, open buckets included: from its first apply until a sealer tick visits it, from its opening after (0 when none)',
    (b) => b.oldestUnfoldedAgeSeconds,
  );
  gauge(
    'tally_flush_lag_seconds',
    'Age of the oldest count not yet written to DynamoDB: as tally_oldest_unfolded_bucket_age_seconds while in a bucket, since its fold while in an outbox (0 when Redis holds none)',
    (b) => b.flushLagSeconds,
  );
}
