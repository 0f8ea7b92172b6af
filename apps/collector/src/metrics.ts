import { metricsOn } from '@tally/observability';
import type { Counter, Registry } from 'prom-client';

/** Low-cardinality reasons of `tally_events_rejected_total`: the field class of the event's first error, or why a request was refused. */
const REJECT_REASONS = [
  'type',
  'ts',
  'id',
  'dims',
  'value',
  'event',
  'json',
  'batch',
  'too_many_events',
  'unavailable',
  'replicas',
  'idempotency_conflict',
  'budget',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export interface CollectorMetrics {
  received: Counter;
  accepted: Counter;
  rejected: Counter<'reason'>;
  /** Requests refused with 429 for the events queue's depth (the alert's signal, apart from the per-store budget). */
  backpressure: Counter;
}

export function createCollectorMetrics(registry: Registry): CollectorMetrics {
  const { counter } = metricsOn(registry);
  const rejected = counter(
    'tally_events_rejected_total',
    "Events refused, by reason: the field of the event's first error (type, ts, id, dims, value, event, json), batch (a valid " +
      'event refused with its all-or-nothing request), too_many_events, unavailable (Redis did not take the batch), replicas (Redis holds the batch, fewer replicas than REDIS_WAIT_REPLICAS did in time: answered 503), idempotency_conflict (an Idempotency-Key reused for other events), or budget (the store was over its ingest budget).',
    ['reason'],
  );
  for (const reason of REJECT_REASONS) rejected.inc({ reason }, 0);
  return {
    received: counter('tally_events_received_total', 'Events in parsed POST /v1/events bodies, valid or not.'),
    accepted: counter('tally_events_accepted_total', 'Events enqueued (Redis acknowledged the batch).'),
    rejected,
    backpressure: counter(
      'tally_collector_backpressure_total',
      'POST /v1/events requests refused with 429 before their body was read, because the events queue shard of their ' +
        'store held more waiting batches than MAX_QUEUE_DEPTH (the aggregators are behind). A store over its own ingest budget is ' +
        'counted in tally_events_rejected_total{reason="budget"} instead.',
    ),
  };
}

/** `dims.product` → `dims`; `__proto__`, `extra`, `(event)` → `event`. */
export function rejectReason(field: string, reason: string): RejectReason {
  if (field === 'type' || field === 'ts' || field === 'id' || field === 'value') return field;
  if (field.startsWith('dims')) return 'dims';
  if (field === '(event)' && / is not valid JSON/.test(reason)) return 'json';
  return 'event';
}
