// The query API as the dashboard uses it: same origin, `Authorization: Bearer <read key>`, JSON answers.
import {
  seriesResponseSchema,
  storeResponseSchema,
  topResponseSchema,
  type Granularity,
  type NamedRange,
  type SeriesAnswer,
  type StoreAnswer as StoreInfo,
  type TopAnswer,
} from '@tally/contracts';
import type { z } from 'zod';
import { KeyRejectedError, RateLimitedError, RequestError, UnreachableError } from './errors';
import type { Day } from './periods';

// The answers' types and schemas are the query API's own (@tally/contracts): each answer is parsed with them.

export type MetricInfo = StoreInfo['metrics'][number];
export type SeriesPoint = SeriesAnswer['points'][number];
/** A series over dates: the dashboard never asks for allTime, so `from` and `to` are days. */
export type Series = SeriesAnswer & { from: Day; to: Day };
export type TopItem = TopAnswer['items'][number];

export interface SeriesQuery {
  /** `store` or `product:P1`. */
  entity: string;
  metrics: readonly string[];
  granularity: Granularity;
  range?: NamedRange;
  from?: Day;
  to?: Day;
}

interface TopQuery {
  entity: string;
  metric: string;
  range: NamedRange;
  limit: number;
}

export interface StoreAnswer {
  info: StoreInfo;
  /** Server clock minus browser clock (ms), estimated from `now`, to tell how old an `asOf` is. */
  clockOffsetMs: number;
}

/** `signal` cancels a request whose answer is no longer wanted (a sibling request of the same run failed). */
export interface ApiClient {
  store(): Promise<StoreAnswer>;
  series(query: SeriesQuery, signal?: AbortSignal): Promise<Series>;
  top(query: TopQuery, signal?: AbortSignal): Promise<TopItem[]>;
}

export interface ApiClientOptions {
  key: string;
  /** Default `''`: the page's own origin (the query API serves the dashboard). */
  baseUrl?: string;
  fetch?: typeof fetch;
  /** Default DEFAULT_TIMEOUT_MS; a slower answer counts as unreachable. */
  timeoutMs?: number;
  now?: () => number;
}

/**
 * How long an answer may take before it counts as unreachable: 30 s. The query API answers or gives up by itself
 * before: each DynamoDB request of a query has QUERY_TIMEOUT_MS (3 s) and is tried twice (≈ 6.5 s with the SDK's
 * pause), and a dashboard query makes one to three of them in a row (its items, under 100 for 24 months: one
 * BatchGetItem; then their overflow items), after a key lookup (≤ 1 s) and Redis commands (≤ 3 s each): ≈ 20 s at
 * worst. Above that, a slow but working query is waited for, and a failing one ends as the API's own 503 (with its
 * Retry-After) rather than as an abort.
 */
const DEFAULT_TIMEOUT_MS = 30_000;

/** A Retry-After header (seconds, or an HTTP date) as milliseconds from `nowMs`; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, nowMs: number): number | undefined {
  if (header === null) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isFinite(at) ? Math.max(0, at - nowMs) : undefined;
}

export function createApiClient(opts: ApiClientOptions): ApiClient {
  const baseUrl = opts.baseUrl ?? '';
  const doFetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const now = opts.now ?? Date.now;

  async function get<T>(path: string, params: URLSearchParams, schema: z.ZodType<T>, signal?: AbortSignal): Promise<T> {
    const qs = params.toString();
    const url = `${baseUrl}${path}${qs ? `?${qs}` : ''}`;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    const cancel = () => abort.abort(signal?.reason);
    if (signal?.aborted) cancel();
    else signal?.addEventListener('abort', cancel, { once: true });
    let res: Response;
    let text: string;
    try {
      res = await doFetch(url, {
        headers: { authorization: `Bearer ${opts.key}`, accept: 'application/json' },
        signal: abort.signal,
        cache: 'no-store',
      });
      text = await res.text();
    } catch (err) {
      // Cancelled by the caller (a sibling request of its run failed, and that failure is the one reported).
      if (signal?.aborted) throw err;
      throw new UnreachableError(abort.signal.aborted ? `no answer within ${timeoutMs / 1000} s` : 'no connection', { cause: err });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', cancel);
    }
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    const { message = `HTTP ${res.status}`, field, requestsPerSecond } = errorDetail(body);
    if (res.status === 401 || res.status === 403) throw new KeyRejectedError(res.status, message);
    // 503 (5 s; 1 s while the API shuts down) and 429 say when to come back: the poller waits that long at least.
    const retryAfter = () => retryAfterMs(res.headers.get('retry-after'), now());
    // Tally answered: the store is over its request rate limit, which is not an outage.
    if (res.status === 429) throw new RateLimitedError(message, { retryAfterMs: retryAfter(), requestsPerSecond });
    if (res.status >= 500) throw new UnreachableError(message, { retryAfterMs: retryAfter() });
    if (res.status >= 400) throw new RequestError(res.status, message, field);
    if (typeof body !== 'object' || body === null) {
      throw new UnreachableError(`${path} did not answer with JSON (HTTP ${res.status})`);
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UnreachableError(
        `${path} answered something else than the query API's answer (${issue.path.join('.') || 'body'}: ${issue.message})`,
      );
    }
    return parsed.data;
  }

  return {
    async store() {
      const sent = now();
      const info = await get('/v1/store', new URLSearchParams(), storeResponseSchema);
      const received = now();
      const serverNow = Date.parse(info.now);
      return { info, clockOffsetMs: Number.isFinite(serverNow) ? serverNow - (sent + received) / 2 : 0 };
    },

    async series(q, signal) {
      const params = new URLSearchParams({ entity: q.entity, metrics: q.metrics.join(','), granularity: q.granularity });
      if (q.range) params.set('range', q.range);
      if (q.from) params.set('from', q.from);
      if (q.to) params.set('to', q.to);
      const series = await get('/v1/series', params, seriesResponseSchema, signal);
      const { from, to } = series;
      if (from === null || to === null) throw new UnreachableError('/v1/series answered without from and to');
      return { ...series, from, to };
    },

    async top(q, signal) {
      const params = new URLSearchParams({ entity: q.entity, metric: q.metric, range: q.range, limit: String(q.limit) });
      const top = await get('/v1/top', params, topResponseSchema, signal);
      return top.items;
    },
  };
}

/**
 * An RFC 9457 problem body (application/problem+json): `detail` says what was wrong, `field` where, and a 429's
 * `requestsPerSecond` the store's rate limit.
 */
function errorDetail(body: unknown): { message: string | undefined; field: string | undefined; requestsPerSecond: number | undefined } {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const rate = b['requestsPerSecond'];
  return {
    message: text(b['detail']) ?? text(b['title']),
    field: text(b['field']),
    requestsPerSecond: typeof rate === 'number' && Number.isFinite(rate) && rate > 0 ? rate : undefined,
  };
}
