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
import { createPacer, type RateLimit } from './pace';
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
  /**
   * Server clock minus browser clock (ms), estimated from `now` and the times the answered request was sent and
   * answered (not its wait for its turn or its refused tries), to tell how old an `asOf` is.
   */
  clockOffsetMs: number;
}

export interface RequestOptions {
  /** Cancels a request whose answer is no longer wanted (a sibling request of the same run failed). */
  signal?: AbortSignal | undefined;
  /** Sent before the other requests waiting for their turn under the store's rate limit (today's live numbers). */
  first?: boolean | undefined;
  /**
   * How long the store's rate limit may hold the request back (the Retry-Afters of its 429s, added up) before its
   * RateLimitedError is thrown, which the banner shows: the caller's refresh interval. Default DEFAULT_PATIENCE_MS.
   * Waiting for its turn (the page pacing itself) never counts.
   */
  patienceMs?: number | undefined;
}

export interface ApiClient {
  store(): Promise<StoreAnswer>;
  series(query: SeriesQuery, opts?: RequestOptions): Promise<Series>;
  top(query: TopQuery, opts?: RequestOptions): Promise<TopItem[]>;
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

/** An answer, and when (`now()`) the request that got it was sent and its answer read. */
interface Answered<T> {
  answer: T;
  sentMs: number;
  receivedMs: number;
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

/** How long a request may be refused by the store's rate limit before it fails, unless the caller says: 10 s. */
const DEFAULT_PATIENCE_MS = 10_000;

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
  // Every request of the signed-in page takes its turn here.
  const pacer = createPacer();

  /**
   * GETs `path` and parses the answer with `schema`. The request waits for its turn (the pacer); every answer's
   * X-RateLimit-* headers teach the pacer the store's limit and what is left of its window, a 429 (its body) too, and a
   * 429 holds every request for its Retry-After, and the refused request is asked again then, as long as its refusals
   * held it back no longer than its patience. Every path asked is a route the limit counts, so a 2xx answer without the
   * headers tells the pacer there is no limit to keep to (it is off, or it counted nothing: its Redis is down). Timed on
   * the attempt answered.
   */
  async function get<T>(path: string, params: URLSearchParams, schema: z.ZodType<T>, req: RequestOptions = {}): Promise<Answered<T>> {
    const qs = params.toString();
    const url = `${baseUrl}${path}${qs ? `?${qs}` : ''}`;
    const { signal, first, patienceMs = DEFAULT_PATIENCE_MS } = req;
    let heldMs = 0;
    for (let again = false; ; again = true) {
      const answered = await pacer.turn({ signal, first, again });
      let res: Response;
      let body: unknown;
      let sentMs: number;
      let receivedMs: number;
      let wait: number | undefined;
      try {
        ({ res, body, sentMs, receivedMs } = await send(url, signal));
        const told = toldRateLimit(res.headers);
        if (told) pacer.told(told.limit, told.remaining);
        else if (res.ok) pacer.untold();
        if (res.status === 429) {
          wait = retryAfterMs(res.headers.get('retry-after'), now());
          pacer.refused(wait, rateLimitOf(body));
        }
      } finally {
        answered();
      }
      // Each refusal counts at least a second (the API's shortest window), so a Retry-After of 0 cannot loop.
      const held = heldMs + Math.max(wait ?? Infinity, 1_000);
      if (res.status === 429 && held <= patienceMs && !signal?.aborted) {
        heldMs = held;
        continue;
      }
      return { answer: parse(path, res, body, schema), sentMs, receivedMs };
    }
  }

  /** Sends one request and reads its answer's body (JSON, or undefined). */
  async function send(
    url: string,
    signal: AbortSignal | undefined,
  ): Promise<{ res: Response; body: unknown; sentMs: number; receivedMs: number }> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    const cancel = () => abort.abort(signal?.reason);
    if (signal?.aborted) cancel();
    else signal?.addEventListener('abort', cancel, { once: true });
    let res: Response;
    let text: string;
    const sentMs = now();
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
    const receivedMs = now();
    try {
      return { res, body: text ? JSON.parse(text) : undefined, sentMs, receivedMs };
    } catch {
      return { res, body: undefined, sentMs, receivedMs };
    }
  }

  /** The answer, or the error that says what went wrong. */
  function parse<T>(path: string, res: Response, body: unknown, schema: z.ZodType<T>): T {
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
      const { answer: info, sentMs, receivedMs } = await get('/v1/store', new URLSearchParams(), storeResponseSchema);
      const serverNow = Date.parse(info.now);
      return { info, clockOffsetMs: Number.isFinite(serverNow) ? serverNow - (sentMs + receivedMs) / 2 : 0 };
    },

    async series(q, req) {
      const params = new URLSearchParams({ entity: q.entity, metrics: q.metrics.join(','), granularity: q.granularity });
      if (q.range) params.set('range', q.range);
      if (q.from) params.set('from', q.from);
      if (q.to) params.set('to', q.to);
      const { answer: series } = await get('/v1/series', params, seriesResponseSchema, req);
      const { from, to } = series;
      if (from === null || to === null) throw new UnreachableError('/v1/series answered without from and to');
      return { ...series, from, to };
    },

    async top(q, req) {
      const params = new URLSearchParams({ entity: q.entity, metric: q.metric, range: q.range, limit: String(q.limit) });
      const { answer: top } = await get('/v1/top', params, topResponseSchema, req);
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

/**
 * The limit an answer's X-RateLimit-Limit names (requests per window), with X-RateLimit-Reset (the seconds left in the
 * window, at least 1, the API's shortest window) and X-RateLimit-Remaining (requests left in the window; undefined
 * when absent or unreadable); undefined when the API sends none (no limit, or the request was not counted).
 */
function toldRateLimit(headers: Headers): { limit: RateLimit; remaining: number | undefined } | undefined {
  const limit = Number(headers.get('x-ratelimit-limit') ?? NaN);
  if (!Number.isInteger(limit) || limit < 1) return undefined;
  const reset = Number(headers.get('x-ratelimit-reset') ?? NaN);
  const remaining = Number(headers.get('x-ratelimit-remaining') ?? NaN);
  return {
    limit: { perWindow: limit, windowMs: Math.max(1, Number.isFinite(reset) ? Math.ceil(reset) : 1) * 1_000 },
    remaining: Number.isInteger(remaining) && remaining >= 0 ? remaining : undefined,
  };
}

/** The limit a 429's problem names (`requestsPerSecond` per window of `windowSeconds`, 1 s when absent). */
function rateLimitOf(body: unknown): RateLimit | undefined {
  const { requestsPerSecond } = errorDetail(body);
  if (requestsPerSecond === undefined) return undefined;
  const w = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const windowSeconds = typeof w['windowSeconds'] === 'number' && w['windowSeconds'] > 0 ? w['windowSeconds'] : 1;
  // As the API counts it: at least 1 a window.
  return { perWindow: Math.max(1, Math.round(requestsPerSecond * windowSeconds)), windowMs: windowSeconds * 1_000 };
}
