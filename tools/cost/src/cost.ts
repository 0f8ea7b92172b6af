import { metricValue } from '@tally/testing';

/**
 * DynamoDB cost of a run from the apps' own counters: events applied (aggregators), and the write and read units
 * the writers consumed (their reads are the sketches' reads before each write), summed over every replica given.
 */
export function costOf(
  aggregatorMetrics: string[],
  writerMetrics: string[],
  pricePerMillionWriteUnits: number,
  pricePerMillionReadUnits: number,
) {
  const sum = (texts: string[], name: string, labels?: Record<string, string>) =>
    texts.reduce((s, t) => s + metricValue(t, name, labels), 0);
  const events = sum(aggregatorMetrics, 'tally_events_applied_total');
  const writeUnits = sum(writerMetrics, 'tally_dynamodb_consumed_write_units_total');
  const readUnits = sum(writerMetrics, 'tally_dynamodb_consumed_read_units_total');
  const perMillion = (units: number) => (events > 0 ? (units / events) * 1e6 : 0);
  const writeUnitsPerMillionEvents = perMillion(writeUnits);
  const readUnitsPerMillionEvents = perMillion(readUnits);
  return {
    events,
    writeUnits,
    readUnits,
    updateItems: sum(writerMetrics, 'tally_dynamodb_requests_total', { operation: 'UpdateItem', outcome: 'ok' }),
    writeUnitsPerMillionEvents,
    readUnitsPerMillionEvents,
    dollarsPerMillionEvents:
      (writeUnitsPerMillionEvents * pricePerMillionWriteUnits + readUnitsPerMillionEvents * pricePerMillionReadUnits) / 1e6,
    pricePerMillionWriteUnits,
    pricePerMillionReadUnits,
  };
}
