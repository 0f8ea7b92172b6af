import { metricValue } from '@tally/testing';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerBacklogGauges, type Backlog } from './aggregator-metrics';

const backlog = (dirtyRows: number): Backlog => ({
  dirtyRows,
  outboxEntries: dirtyRows * 2,
  oldestUnfoldedAgeSeconds: 0,
  flushLagSeconds: 7,
});

describe('registerBacklogGauges', () => {
  it('answers a scrape with the last values when the read hangs (a connection queueing commands while Redis is away), counting the miss once', async () => {
    const registry = new Registry();
    let answer: (b: Backlog) => void = () => {};
    let reads = 0;
    let next: () => Promise<Backlog> = async () => backlog(3);
    registerBacklogGauges(
      registry,
      () => {
        reads++;
        return next();
      },
      50,
    );
    const first = await registry.metrics();
    expect(metricValue(first, 'tally_outbox_rows')).toBe(3);
    expect(metricValue(first, 'tally_backlog_metrics_errors_total')).toBe(0);

    await new Promise((r) => setTimeout(r, 300)); // past the 250 ms a read is shared
    next = () => new Promise<Backlog>((resolve) => (answer = resolve));
    const stale = await registry.metrics();
    expect(metricValue(stale, 'tally_outbox_rows')).toBe(3);
    expect(metricValue(stale, 'tally_flush_lag_seconds')).toBe(7);
    expect(metricValue(stale, 'tally_backlog_metrics_errors_total')).toBe(1);
    // The read still pending is shared by the next scrape, not started again.
    const readsBefore = reads;
    await registry.metrics();
    expect(reads).toBe(readsBefore);

    answer(backlog(5)); // Redis back: the pending read lands
    await new Promise((r) => setTimeout(r, 300));
    next = async () => backlog(6);
    const fresh = await registry.metrics();
    expect(metricValue(fresh, 'tally_outbox_rows')).toBe(6);
    expect(metricValue(fresh, 'tally_backlog_metrics_errors_total')).toBe(2);
  });
});
