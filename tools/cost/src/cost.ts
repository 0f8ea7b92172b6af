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

/**
 * Why a run has no cost per event, or undefined if its aggregators applied events: tally_events_applied_total is
 * missing (not an aggregator's /metrics: the URLs swapped?) or 0 (no traffic yet) at every aggregator URL given.
 */
export function noEventsApplied(aggregatorUrls: string[], aggregatorMetrics: string[]): string | undefined {
  const name = 'tally_events_applied_total';
  if (aggregatorMetrics.reduce((s, t) => s + metricValue(t, name), 0) > 0) return undefined;
  const present = aggregatorMetrics.map((t) => t.split('\n').some((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`)));
  const where = aggregatorUrls.map((url, i) => `${present[i] ? '0' : 'missing'} at ${url}`).join(', ');
  const what = present.every(Boolean)
    ? 'no events applied yet: send traffic first (e.g. npm run loadgen), then run this again'
    : "check that each --aggregator URL is a bucket-aggregator's and each --writer URL a dynamo-writer's (not swapped)";
  return `${name} is ${where}; ${what}`;
}
