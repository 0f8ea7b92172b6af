import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type AggregatorMetrics = ReturnType<typeof createAggregatorMetrics>;

export function createAggregatorMetrics(registry: Registry) {
  const registers = [registry];
  return {
    batchesApplied: new Counter({ name: 'tally_batches_applied_total', help: 'Event batches applied to Redis buckets', registers }),
    eventsApplied: new Counter({ name: 'tally_events_applied_total', help: 'Events applied to Redis buckets', registers }),
    duplicateBatches: new Counter({
      name: 'tally_batches_duplicate_total',
      help: 'Redelivered batches skipped by the batch-id dedupe',
      registers,
    }),
    batchesRejected: new Counter({
      name: 'tally_batches_rejected_total',
      help: 'Batches moved to the failed set as unprocessable',
      labelNames: ['reason'],
      registers,
    }),
    batchesDropped: new Counter({
      name: 'tally_batches_dropped_total',
      help: 'Batches dropped whole because their store was deleted (its tombstone)',
      registers,
    }),
    applySeconds: new Histogram({
      name: 'tally_apply_duration_seconds',
      help: 'Time to roll up and apply one batch',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    bucketsSealed: new Counter({ name: 'tally_buckets_sealed_total', help: 'Buckets sealed', registers }),
    bucketsFolded: new Counter({ name: 'tally_buckets_folded_total', help: 'Buckets folded completely into row outboxes', registers }),
    rowsFolded: new Counter({ name: 'tally_rows_folded_total', help: 'Row buckets folded into outboxes', registers }),
    sealLag: new Gauge({ name: 'tally_seal_lag_seconds', help: 'How late the last seal was after its bucket was due to close', registers }),
    foldSeconds: new Histogram({
      name: 'tally_fold_duration_seconds',
      help: 'Time to fold one store’s sealed buckets',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    }),
    sealTickSeconds: new Histogram({
      name: 'tally_seal_tick_duration_seconds',
      help: 'Time of one sealer tick over one work-set shard (its active stores)',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    flushesScheduled: new Counter({ name: 'tally_flushes_scheduled_total', help: 'Row flush jobs enqueued to dynamo-writes', registers }),
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
 * writer publish per store), so every replica reports the same value whoever ran the last seal, and a scrape
 * costs the same with ten stores or ten thousand. Values are as of each store's last seal tick or flush. A
 * scrape while Redis is unreachable keeps the previous values.
 */
export function registerBacklogGauges(registry: Registry, read: () => Promise<Backlog>) {
  let last: Backlog = { dirtyRows: 0, outboxEntries: 0, oldestUnfoldedAgeSeconds: 0, flushLagSeconds: 0 };
  let pending: Promise<Backlog> | undefined;
  const current = () =>
    (pending ??= read()
      .then((b) => (last = b))
      .catch(() => last)
      .finally(() => setTimeout(() => (pending = undefined), 250)));
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
    'Age of the oldest bucket not yet folded (0 when none)',
    (b) => b.oldestUnfoldedAgeSeconds,
  );
  gauge('tally_flush_lag_seconds', 'Age of the oldest count not yet written to DynamoDB (0 when none)', (b) => b.flushLagSeconds);
}
