import { describe, expect, it } from 'vitest';
import { costOf, sumMetric } from './cost';

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
