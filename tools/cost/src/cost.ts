import { metricValue } from '@tally/testing';

/**
 * Write cost of a run from the apps' own counters: events applied (aggregators) and consumed write units
 * (writers), summed over every replica given.
 */
export function costOf(aggregatorMetrics: string[], writerMetrics: string[], pricePerMillionWriteUnits: number) {
  const sum = (texts: string[], name: string, labels?: Record<string, string>) =>
    texts.reduce((s, t) => s + metricValue(t, name, labels), 0);
  const events = sum(aggregatorMetrics, 'tally_events_applied_total');
  const writeUnits = sum(writerMetrics, 'tally_dynamodb_consumed_write_units_total');
  const writeUnitsPerMillionEvents = events > 0 ? (writeUnits / events) * 1e6 : 0;
  return {
    events,
    writeUnits,
    readUnits: sum(writerMetrics, 'tally_dynamodb_consumed_read_units_total'),
    updateItems: sum(writerMetrics, 'tally_dynamodb_requests_total', { operation: 'UpdateItem', outcome: 'ok' }),
    writeUnitsPerMillionEvents,
    dollarsPerMillionEvents: (writeUnitsPerMillionEvents / 1e6) * pricePerMillionWriteUnits,
    pricePerMillionWriteUnits,
  };
}
