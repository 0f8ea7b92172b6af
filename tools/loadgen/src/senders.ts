import { sleep } from '@tally/testing';
import { createTallyClient, QueueFullError, QueueUnavailableError, ReplicasBehindError, ValidationError } from '@tally/client';
import type { TallyClientOptions } from '@tally/client';
import type { EventError } from '@tally/schema';
import type { LoadBatch } from './generator';

type Answer =
  | { kind: 'accepted'; accepted: number; errors?: EventError[] }
  | { kind: 'rejected'; status: number; code: string; message: string; errors: EventError[] };

/** The definitive answer to one batch, after retrying what deserved a retry (same Idempotency-Key every time). */
export type SendOutcome = (Answer | { kind: 'gave-up'; lastError: string }) & { attempts: number };

export interface Sender {
  readonly via: 'http' | 'client';
  /** `partial`, HTTP only: `?partial=true` (accept the valid events of a batch that has invalid ones). */
  send(batch: LoadBatch, opts?: { partial?: boolean }): Promise<SendOutcome>;
  close(): Promise<void>;
}

export interface RetryPolicy {
  /** Give up on a batch after this long without a definitive answer. Default 120 s. */
  deadlineMs?: number;
  /** First retry delay (default 100 ms), doubled up to maxDelayMs (default 2 s, a longer Retry-After cut to it). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Called before each retry with why (`503`, `429`, `ECONNREFUSED`, `QueueUnavailableError`, …). */
  onRetry?: (reason: string) => void;
}

/** An attempt's outcome: a definitive answer, or why to retry (and after how long the server asks). */
type Attempt = { done: Answer } | { retry: string; retryAfterMs?: number };
async function withRetries(policy: RetryPolicy, attempt: () => Promise<Attempt>): Promise<SendOutcome> {
  const deadline = Date.now() + (policy.deadlineMs ?? 120_000);
  const maxDelay = policy.maxDelayMs ?? 2_000;
  let delay = policy.initialDelayMs ?? 100;
  for (let attempts = 1; ; attempts++) {
    const r = await attempt();
    if ('done' in r) return { ...r.done, attempts };
    if (Date.now() >= deadline) return { kind: 'gave-up', attempts, lastError: r.retry };
    policy.onRetry?.(r.retry);
    await sleep(Math.min(maxDelay, Math.max(delay, r.retryAfterMs ?? 0), Math.max(0, deadline - Date.now())));
    delay = Math.min(maxDelay, delay * 2);
  }
}

export interface HttpSenderOptions extends RetryPolicy {
  /** The collector's base URL, e.g. http://127.0.0.1:7401, and each store's ingest key. */
  url: string;
  keyOf: (store: string) => string;
}

/** POST /v1/events with the store's ingest key and the batch's Idempotency-Key; retries 429, 5xx and network errors. */
export function httpSender(opts: HttpSenderOptions): Sender {
  return {
    via: 'http',
    send(batch, sopts = {}) {
      const body = JSON.stringify(batch.events);
      return withRetries(opts, async () => {
        let res: Response;
        try {
          res = await fetch(`${opts.url}/v1/events${sopts.partial ? '?partial=true' : ''}`, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              authorization: `Bearer ${opts.keyOf(batch.store)}`,
              'idempotency-key': batch.idempotencyKey,
            },
            body,
            signal: AbortSignal.timeout(15_000),
          });
        } catch (err) {
          const cause = (err as { cause?: { code?: string } }).cause;
          return { retry: cause?.code ?? (err as Error).name ?? 'fetch failed' };
        }
        const json: any = await res.json().catch(() => undefined);
        // A reply cut short: the outcome is unknown, and a retry with the same key is safe.
        if (json === undefined) return { retry: `${res.status} without a JSON body` };
        if (res.status === 202) return { done: { kind: 'accepted', accepted: json.accepted, errors: json.errors } };
        if (res.status === 429 || res.status >= 500) {
          const ra = Number(res.headers.get('retry-after'));
          return { retry: String(res.status), retryAfterMs: Number.isFinite(ra) ? ra * 1_000 : undefined };
        }
        return {
          done: { kind: 'rejected', status: res.status, code: json.code ?? '', message: json.detail ?? '', errors: json.errors ?? [] },
        };
      });
    },
    async close() {},
  };
}

/** How libs/client reaches the installation (its Redis, KEY_PREFIX, QUEUE_SHARDS and rules), and the retries. */
export type ClientSenderOptions = Omit<TallyClientOptions, 'readyTimeoutMs'> & RetryPolicy;

/** libs/client enqueueEvents with the batch's idempotency key; retries QueueUnavailableError, QueueFullError and ReplicasBehindError. */
export function clientSender(opts: ClientSenderOptions): Sender {
  // One call waits 1 s for a reconnecting Redis. The retry policy is the sender's, not a client option (refused).
  const { deadlineMs: _deadline, initialDelayMs: _initial, maxDelayMs: _max, onRetry: _onRetry, ...clientOptions } = opts;
  const client = createTallyClient({ ...clientOptions, readyTimeoutMs: 1_000 });
  return {
    via: 'client',
    send(batch) {
      return withRetries(opts, async () => {
        try {
          const r = await client.enqueueEvents(batch.store, batch.events, { idempotencyKey: batch.idempotencyKey });
          return { done: { kind: 'accepted', accepted: r.accepted } };
        } catch (err) {
          // Backpressure (the collector's 429), or enqueued but not yet on the replicas waited for (its 503): retried.
          if (err instanceof QueueFullError) return { retry: err.name, retryAfterMs: err.retryAfterSeconds * 1_000 };
          if (err instanceof QueueUnavailableError || err instanceof ReplicasBehindError) return { retry: err.name };
          const { code, message, name } = err as { code?: unknown; message: string; name: string };
          const errors = err instanceof ValidationError ? err.errors : [];
          // A ValidationError, or another refusal of libs/client (TALLY_ERR_*): definitive.
          if (err instanceof ValidationError || (typeof code === 'string' && code.startsWith('TALLY_ERR_')))
            return { done: { kind: 'rejected', status: 400, code: String(code), message, errors } };
          return { retry: name || 'Error' };
        }
      });
    },
    close: () => client.close(),
  };
}
