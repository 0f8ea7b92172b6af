import type { ConsumedCapacity } from '@aws-sdk/client-dynamodb';
import { Counter, Histogram, type Registry } from 'prom-client';
import { isConnectionError } from './client';

export type DynamoOperation = 'UpdateItem' | 'GetItem' | 'Query' | 'BatchGetItem' | 'PutItem' | 'DeleteItem' | 'DescribeTable';
export type DynamoOutcome = 'ok' | 'condition_failed' | 'throttled' | 'unavailable' | 'client_error' | 'error';

/** Cost and health metering of every DynamoDB call (docs/DESIGN.md: consumed write/read units). */
export interface DynamoMeter {
  observe(op: DynamoOperation, outcome: DynamoOutcome, seconds: number, consumed?: ConsumedCapacity | ConsumedCapacity[]): void;
  /** Running totals, for benchmarks and tools/cost. */
  totals(): { writeUnits: number; readUnits: number; requests: Record<string, number> };
}

export function createDynamoMeter(registry?: Registry): DynamoMeter {
  const registers = registry ? [registry] : [];
  const wcu = new Counter({
    name: 'tally_dynamodb_consumed_write_units_total',
    help: 'DynamoDB write capacity units consumed (ReturnConsumedCapacity)',
    labelNames: ['operation'],
    registers,
  });
  const rcu = new Counter({
    name: 'tally_dynamodb_consumed_read_units_total',
    help: 'DynamoDB read capacity units consumed (ReturnConsumedCapacity)',
    labelNames: ['operation'],
    registers,
  });
  const requests = new Counter({
    name: 'tally_dynamodb_requests_total',
    help: 'DynamoDB requests by operation and outcome',
    labelNames: ['operation', 'outcome'],
    registers,
  });
  const latency = new Histogram({
    name: 'tally_dynamodb_request_duration_seconds',
    help: 'DynamoDB request latency',
    labelNames: ['operation'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  // Zero samples from the start, so an idle process reports 0 rather than no data.
  for (const operation of ['UpdateItem', 'GetItem', 'Query', 'BatchGetItem']) {
    wcu.inc({ operation }, 0);
    rcu.inc({ operation }, 0);
    requests.inc({ operation, outcome: 'ok' }, 0);
  }
  const totals = { writeUnits: 0, readUnits: 0, requests: {} as Record<string, number> };
  return {
    observe(op, outcome, seconds, consumed) {
      requests.inc({ operation: op, outcome });
      latency.observe({ operation: op }, seconds);
      const key = `${op}:${outcome}`;
      totals.requests[key] = (totals.requests[key] ?? 0) + 1;
      for (const c of Array.isArray(consumed) ? consumed : consumed ? [consumed] : []) {
        // Tables in on-demand mode report CapacityUnits only; attribute them by operation kind.
        const units = c.CapacityUnits ?? 0;
        const isWrite = op === 'UpdateItem' || op === 'PutItem' || op === 'DeleteItem';
        const wAll = (c.WriteCapacityUnits ?? 0) || (isWrite ? units : 0);
        const rAll = (c.ReadCapacityUnits ?? 0) || (isWrite ? 0 : units);
        if (wAll) {
          wcu.inc({ operation: op }, wAll);
          totals.writeUnits += wAll;
        }
        if (rAll) {
          rcu.inc({ operation: op }, rAll);
          totals.readUnits += rAll;
        }
      }
    },
    totals: () => ({ ...totals, requests: { ...totals.requests } }),
  };
}

/** Runs one DynamoDB call and meters it (outcome, latency, consumed units); its error is rethrown as is. */
export async function metered<T extends { ConsumedCapacity?: any }>(
  meter: DynamoMeter,
  op: DynamoOperation,
  run: () => Promise<T>,
): Promise<T> {
  const started = performance.now();
  try {
    const out = await run();
    meter.observe(op, 'ok', (performance.now() - started) / 1000, out.ConsumedCapacity);
    return out;
  } catch (err) {
    meter.observe(op, classifyError(err), (performance.now() - started) / 1000);
    throw err;
  }
}

/**
 * Throttling, by error name (AWS SDKs' list: DynamoDB's own and those of the AWS front ends). A 429 is one whatever
 * its name.
 */
const THROTTLING = new Set([
  'ProvisionedThroughputExceededException',
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'LimitExceededException',
  'BandwidthLimitExceeded',
  'SlowDown',
  'PriorRequestNotComplete',
  'TransactionInProgressException',
]);

/** Classifies an AWS SDK error for metrics and retry decisions (see also isTransientError). */
export function classifyError(err: unknown): DynamoOutcome {
  const name = (err as { name?: string })?.name ?? '';
  if (name === 'ConditionalCheckFailedException') return 'condition_failed';
  const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
  if (THROTTLING.has(name) || status === 429) return 'throttled';
  if (name === 'InternalServerError' || name === 'ServiceUnavailable' || (status !== undefined && status >= 500)) return 'unavailable';
  if (isConnectionError(err)) return 'unavailable';
  if (status !== undefined && status >= 400) return 'client_error';
  return 'error';
}

/**
 * 4xx answers (outcome `client_error`) that refuse the caller or the moment, not the request: credentials expired,
 * rotating or not yet valid (clock skew), permissions denied (an IAM rollout), the table missing or busy (a restore,
 * a deploy naming a table not created yet), a request timed out, or a conflict with a transaction on the item.
 */
const OPERATIONAL_REFUSALS = new Set([
  // Credentials and signatures
  'ExpiredTokenException',
  'ExpiredToken',
  'UnrecognizedClientException',
  'InvalidClientTokenId',
  'InvalidAccessKeyId',
  'InvalidSignatureException',
  'SignatureDoesNotMatch',
  'IncompleteSignature',
  'IncompleteSignatureException',
  'MissingAuthenticationToken',
  'MissingAuthenticationTokenException',
  'RequestExpired',
  'RequestTimeTooSkewed',
  'RequestInTheFuture',
  'AuthFailure',
  // Permissions
  'AccessDeniedException',
  'AccessDenied',
  'NotAuthorized',
  'UnauthorizedOperation',
  // The table
  'ResourceNotFoundException',
  'ResourceInUseException',
  'TableNotFoundException',
  'TableInUseException',
  'ReplicaNotFoundException',
  'InvalidEndpointException',
  // The moment
  'RequestTimeout',
  'RequestTimeoutException',
  'TransactionConflictException',
  'ReplicatedWriteConflictException',
]);

/**
 * True for a DynamoDB error after which the same request may succeed later, with nothing changed in it: throttling,
 * a 5xx, no answer, an error with no HTTP status (outcome `error`: no credentials found, a signing failure), and the
 * operational 4xx refusals above (and any 401, 403, 408). False for a refusal of the request itself
 * (ValidationException: an item over 400 KB, a malformed expression; SerializationException; any 4xx not named
 * above) and for a failed condition.
 */
export function isTransientError(err: unknown): boolean {
  const outcome = classifyError(err);
  if (outcome === 'throttled' || outcome === 'unavailable' || outcome === 'error') return true;
  if (outcome !== 'client_error') return false;
  const name = (err as { name?: string })?.name ?? '';
  const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
  return OPERATIONAL_REFUSALS.has(name) || status === 401 || status === 403 || status === 408;
}
