import { createTallyClient, QueueUnavailableError, ValidationError, type TallyClient } from '@tally/client';
import type { CompiledRules, EventError } from '@tally/schema';
import type { LoadBatch } from './generator';

/** The definitive answer to one batch, after retrying what deserved a retry (same Idempotency-Key every time). */
export type SendOutcome =
  | { kind: 'accepted'; accepted: number; batchId: string; attempts: number; acceptedIndexes?: number[]; errors?: EventError[] }
  | { kind: 'rejected'; status: number; code: string; message: string; errors: EventError[]; attempts: number }
  | { kind: 'gave-up'; attempts: number; lastError: string };

export interface SendOptions {
  /** HTTP only: `?partial=true` (accept the valid events of a batch that has invalid ones). */
  partial?: boolean;
}

export interface Sender {
  readonly via: 'http' | 'client';
  send(batch: LoadBatch, opts?: SendOptions): Promise<SendOutcome>;
  close(): Promise<void>;
}

export interface RetryPolicy {
  /** Give up on a batch after this long without a definitive answer. Default 120 s. */
  deadlineMs?: number;
  /** First retry delay; doubles up to maxDelayMs. Default 100 ms. */
  initialDelayMs?: number;
  /** Longest wait between attempts (a Retry-After above it is cut to it). Default 2000 ms. */
  maxDelayMs?: number;
  /** Called before each retry with why (`503`, `429`, `ECONNREFUSED`, `QueueUnavailableError`, …). */
  onRetry?: (reason: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withRetries(
  policy: RetryPolicy,
  attempt: () => Promise<{ done: SendOutcome } | { retry: string; retryAfterMs?: number }>,
): Promise<SendOutcome> {
  const deadline = Date.now() + (policy.deadlineMs ?? 120_000);
  const maxDelay = policy.maxDelayMs ?? 2_000;
  let delay = policy.initialDelayMs ?? 100;
  let lastError = '';
  for (let attempts = 1; ; attempts++) {
    const r = await attempt();
    if ('done' in r) return { ...r.done, attempts } as SendOutcome;
    lastError = r.retry;
    if (Date.now() >= deadline) return { kind: 'gave-up', attempts, lastError };
    policy.onRetry?.(r.retry);
    await sleep(Math.min(maxDelay, Math.max(delay, r.retryAfterMs ?? 0), Math.max(0, deadline - Date.now())));
    delay = Math.min(maxDelay, delay * 2);
  }
}

export interface HttpSenderOptions extends RetryPolicy {
  /** The collector's base URL, e.g. http://127.0.0.1:7401 */
  url: string | (() => string);
  /** The ingest key of each store (the store comes from the key). */
  keyOf: (store: string) => string;
  /** Deadline of one request. Default 15 s. */
  requestTimeoutMs?: number;
}

/** POST /v1/events with the store's ingest key and the batch's Idempotency-Key; retries 429, 5xx and network errors. */
export function httpSender(opts: HttpSenderOptions): Sender {
  const urlOf = typeof opts.url === 'function' ? opts.url : () => opts.url as string;
  return {
    via: 'http',
    send(batch, sopts = {}) {
      const body = JSON.stringify(batch.events);
      return withRetries(opts, async () => {
        let res: Response;
        try {
          res = await fetch(`${urlOf()}/v1/events${sopts.partial ? '?partial=true' : ''}`, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              authorization: `Bearer ${opts.keyOf(batch.store)}`,
              'idempotency-key': batch.idempotencyKey,
            },
            body,
            signal: AbortSignal.timeout(opts.requestTimeoutMs ?? 15_000),
          });
        } catch (err) {
          const cause = (err as { cause?: { code?: string } }).cause;
          return { retry: cause?.code ?? (err as Error).name ?? 'fetch failed' };
        }
        let json: any;
        try {
          json = await res.json();
        } catch {
          // A reply cut short: the outcome is unknown, and a retry with the same key is safe.
          return { retry: `${res.status} without a JSON body` };
        }
        if (res.status === 202) {
          return {
            done: {
              kind: 'accepted',
              accepted: json.accepted,
              batchId: json.batchId,
              attempts: 0,
              ...(json.acceptedIndexes ? { acceptedIndexes: json.acceptedIndexes } : {}),
              ...(json.errors ? { errors: json.errors } : {}),
            },
          };
        }
        if (res.status === 429 || res.status >= 500) {
          const ra = Number(res.headers.get('retry-after'));
          return { retry: String(res.status), retryAfterMs: Number.isFinite(ra) ? ra * 1_000 : undefined };
        }
        return {
          done: {
            kind: 'rejected',
            status: res.status,
            code: json.code ?? '',
            message: json.detail ?? '',
            errors: json.errors ?? [],
            attempts: 0,
          },
        };
      });
    },
    async close() {},
  };
}

export interface ClientSenderOptions extends RetryPolicy {
  redisUrl: string;
  /** Redis Cluster seed nodes of the installation (REDIS_CLUSTER_NODES), if it runs on one. */
  clusterNodes?: Array<{ host: string; port: number }>;
  /** KEY_PREFIX of the installation. Default `t`. */
  keyPrefix?: string;
  /** QUEUE_SHARDS of the installation. Default 1. */
  queueShards?: number;
  /** The rules the aggregator runs with. */
  rules?: CompiledRules;
  /** How long one call waits for a reconnecting Redis. Default 1000 ms. */
  readyTimeoutMs?: number;
}

/** libs/client enqueueEvents with the batch's idempotency key; retries QueueUnavailableError. */
export function clientSender(opts: ClientSenderOptions): Sender {
  const client: TallyClient = createTallyClient({
    connection: { REDIS_URL: opts.redisUrl, REDIS_CLUSTER_NODES: opts.clusterNodes },
    keyPrefix: opts.keyPrefix ?? 't',
    queueShards: opts.queueShards ?? 1,
    ...(opts.rules ? { rules: opts.rules } : {}),
    readyTimeoutMs: opts.readyTimeoutMs ?? 1_000,
  });
  return {
    via: 'client',
    send(batch) {
      return withRetries(opts, async () => {
        try {
          const r = await client.enqueueEvents(batch.store, batch.events, { idempotencyKey: batch.idempotencyKey });
          return { done: { kind: 'accepted', accepted: r.accepted, batchId: r.batchId, attempts: 0 } };
        } catch (err) {
          if (err instanceof ValidationError) {
            return { done: { kind: 'rejected', status: 400, code: err.code, message: err.message, errors: err.errors, attempts: 0 } };
          }
          if (err instanceof QueueUnavailableError) return { retry: 'QueueUnavailableError' };
          const code = (err as { code?: unknown }).code;
          if (typeof code === 'string' && code.startsWith('TALLY_ERR_')) {
            return { done: { kind: 'rejected', status: 400, code, message: (err as Error).message, errors: [], attempts: 0 } };
          }
          return { retry: (err as Error).name || 'Error' };
        }
      });
    },
    close: () => client.close(),
  };
}
