import { metricValue as sumMetric } from '@tally/testing';

export { sumMetric };

export interface CostReport {
  events: number;
  writeUnits: number;
  readUnits: number;
  updateItems: number;
  writeUnitsPerMillionEvents: number;
  dollarsPerMillionEvents: number;
  pricePerMillionWriteUnits: number;
}

/**
 * Write cost of a run from the apps' own counters: events applied (aggregators) and consumed write units
 * (writers), summed over every replica given.
 */
export function costOf(aggregatorMetrics: string[], writerMetrics: string[], pricePerMillionWriteUnits: number): CostReport {
  const events = aggregatorMetrics.reduce((s, t) => s + sumMetric(t, 'tally_events_applied_total'), 0);
  const writeUnits = writerMetrics.reduce((s, t) => s + sumMetric(t, 'tally_dynamodb_consumed_write_units_total'), 0);
  const readUnits = writerMetrics.reduce((s, t) => s + sumMetric(t, 'tally_dynamodb_consumed_read_units_total'), 0);
  const updateItems = writerMetrics.reduce(
    (s, t) => s + sumMetric(t, 'tally_dynamodb_requests_total', { operation: 'UpdateItem', outcome: 'ok' }),
    0,
  );
  const perMillion = events > 0 ? (writeUnits / events) * 1e6 : 0;
  return {
    events,
    writeUnits,
    readUnits,
    updateItems,
    writeUnitsPerMillionEvents: perMillion,
    dollarsPerMillionEvents: (perMillion / 1e6) * pricePerMillionWriteUnits,
    pricePerMillionWriteUnits,
  };
}
