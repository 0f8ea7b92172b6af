import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { metricValue as sumMetric, REPO_ROOT } from '@tally/testing';
import { measuredFigures } from './benchmarks';
import { costOf } from './cost';
import { DEFAULT_WORKLOAD, formatSizing, sizeDeployment, type Measured } from './sizing';

const agg = `# HELP tally_events_applied_total x
tally_events_applied_total{app="bucket-aggregator"} 500000`;
const writer = `tally_dynamodb_consumed_write_units_total{operation="UpdateItem",app="dynamo-writer"} 1200
tally_dynamodb_consumed_read_units_total{operation="GetItem",app="dynamo-writer"} 3
tally_dynamodb_requests_total{operation="UpdateItem",outcome="ok",app="dynamo-writer"} 1100
tally_dynamodb_requests_total{operation="UpdateItem",outcome="condition_failed",app="dynamo-writer"} 7`;

describe('cost', () => {
  it('sums metrics by name and labels', () => {
    expect(sumMetric(writer, 'tally_dynamodb_requests_total')).toBe(1107);
    expect(sumMetric(writer, 'tally_dynamodb_requests_total', { outcome: 'ok' })).toBe(1100);
  });
  it('reports write units and dollars per million events over replicas', () => {
    const r = costOf([agg, agg], [writer], 1.25);
    expect(r.events).toBe(1_000_000);
    expect(r.writeUnits).toBe(1200);
    expect(r.updateItems).toBe(1100);
    expect(r.writeUnitsPerMillionEvents).toBe(1200);
    expect(r.dollarsPerMillionEvents).toBeCloseTo(0.0015, 10);
  });
  it('reports zero per million when nothing was applied', () => {
    expect(costOf([''], [writer], 1).writeUnitsPerMillionEvents).toBe(0);
  });
});

describe('sizing', () => {
  const workload = DEFAULT_WORKLOAD;
  const measured = {
    writeUnitsPerMillionEvents: 1_000_000,
    readUnitsPerQuery: 0.5,
    bytesPerOpenRow: 200,
    bytesPerStore: 1_000,
    bytesPerDedupeRecord: 150,
    aggregatorEventsPerSecond: 80_000,
    collectorCpuMsPer1000Events: 3,
    endToEndEventsPerSecondPerRedis: 40_000,
  };
  it('derives memory, shards, replicas and units from the workload and the measured figures', () => {
    const s = sizeDeployment(workload, measured);
    // 20M visitors / 43,200 minutes * 30 = 13,889 visitor rows; 1,000,000 product rows; 10,000 store rows.
    expect(s.openRows).toBe(1_023_889);
    expect(s.redisBytes.dedupe).toBe(50 * 86_400 * 150);
    expect(s.redisBytes.total).toBeCloseTo(1_023_889 * 200 + 10_000 * 1_000 + 50 * 86_400 * 150, 0);
    expect(s.redisMasters).toBe(3);
    expect(s.aggregatorReplicas).toBe(2);
    expect(s.collectorCoresAtPeak).toBeCloseTo(0.15, 10);
    expect(s.writeUnitsPerSecondPeak).toBe(50_000);
    expect(s.monthly.writeUnits).toBe(5_000 * 2_592_000);
    expect(s.monthly.onDemandUsd).toBeCloseTo(5_000 * 2.592 * 0.625 + 50 * 2.592 * 0.125, 6);
    expect(s.monthly.provisionedUsd).toBeCloseTo(5_000 * 730 * 0.00065 + 50 * 730 * 0.00013, 6);
  });
});

const doc = (name: string) => readFileSync(path.join(REPO_ROOT, 'docs', name), 'utf8');
const values = (figures: ReturnType<typeof measuredFigures>) =>
  Object.fromEntries(Object.entries(figures).map(([k, f]) => [k, 'value' in f ? f.value : f.missing])) as unknown as Measured;

describe('the measured figures of npm run cost -- size', () => {
  it("are read from each figure's current run in docs/BENCHMARKS.md, never its previous one", () => {
    const figures = measuredFigures(doc('BENCHMARKS.md'));
    for (const [name, f] of Object.entries(figures)) expect(f, name).toHaveProperty('value');
    const bench = `# Benchmarks

## aggregator-apply

Run 2026-12-24T06:00:00.000Z on 2 cores.

| figure | value |
|---|---|
| events/s applied (one aggregator process, queue pre-filled, 400 batches of 1000) | 120,001 |
| Redis bytes per dedupe record (batch id, 24 h TTL) | 150 |

### Previous run

| figure | value |
|---|---|
| events/s applied (one aggregator process, queue pre-filled, 400 batches of 1000) | 99,999 |

## write-cost

Run 2026-12-24T07:00:00.000Z.

| design | UpdateItems | write units | WCU per million events |
|---|---|---|---|
| naive | 1 | 1 | 12,000,000 |
| Tally default policy (store/product hourly, visitor at session end) | 10,610 (230 / 5,696 / 4,684) | 10,693 | 900,000 |
`;
    const read = measuredFigures(bench);
    expect(read.aggregatorEventsPerSecond).toEqual({
      value: 120_001,
      from: 'docs/BENCHMARKS.md aggregator-apply, run 2026-12-24T06:00:00.000Z',
    });
    expect(read.bytesPerDedupeRecord).toMatchObject({ value: 150 });
    expect(read.writeUnitsPerMillionEvents).toEqual({
      value: 900_000,
      from: 'docs/BENCHMARKS.md write-cost, run 2026-12-24T07:00:00.000Z',
    });
    expect(read.endToEndEventsPerSecondPerRedis).toEqual({ missing: 'docs/BENCHMARKS.md has no ## ingest-e2e section' });
    // A figure given (a flag) wins; the fixed ones need no document.
    const given = measuredFigures(new Error('ENOENT'), { aggregatorEventsPerSecond: { value: 5, from: 'given' } });
    expect(given.aggregatorEventsPerSecond).toEqual({ value: 5, from: 'given' });
    expect(given.writeUnitsPerMillionEvents).toEqual({ missing: 'cannot read docs/BENCHMARKS.md (ENOENT)' });
    expect(given.readUnitsPerQuery).toMatchObject({ value: 0.5 });
  });

  it('are the ones docs/SCALING.md quotes, and its Result is what the tool prints with them', () => {
    const measured = values(measuredFigures(doc('BENCHMARKS.md')));
    const scaling = doc('SCALING.md');
    const input = (label: string) => {
      const row = scaling.split('\n').find((l) => l.startsWith(`| ${label} |`));
      return Number(row?.split('|')[2]!.trim().replaceAll(',', ''));
    };
    expect({
      writeUnitsPerMillionEvents: input('Write units per million events (default rules)'),
      readUnitsPerQuery: input('Read units per query'),
      bytesPerOpenRow: input('Redis bytes per open row'),
      bytesPerStore: input('Redis bytes per store'),
      bytesPerDedupeRecord: input('Redis bytes per dedupe record'),
      aggregatorEventsPerSecond: input('Events/s one aggregator process applies'),
      collectorCpuMsPer1000Events: input('Collector CPU ms per 1,000 events (1000-event batches)'),
      endToEndEventsPerSecondPerRedis: input('Events/s end to end on one Redis (all apps on 2 shared cores)'),
    }).toEqual(measured);
    const result = /## Result\n\n```\n([\s\S]*?)\n```/.exec(scaling)?.[1];
    expect(result).toBe(formatSizing(sizeDeployment(DEFAULT_WORKLOAD, measured)));
  });
});
