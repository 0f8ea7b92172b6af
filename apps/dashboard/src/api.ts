// The query API as the dashboard uses it: same origin, `Authorization: Bearer <read key>`, JSON answers.
import { KeyRejectedError, RequestError, UnreachableError } from './errors';
import type { MetricValue } from './format';
import type { Day } from './periods';

export interface MetricInfo {
  name: string;
  /** Fraction digits of the metric's exact decimal values (Revenue: 2); 0 for counts. */
  scale: number;
  description: string;
}

export interface StoreInfo {
  store: string;
  /** IANA name; every day and month the API answers is a day or month of this zone. */
  timeZone: string;
  now: string;
  today: Day;
  metrics: MetricInfo[];
  entities: string[];
}

export type Granularity = 'day' | 'month' | 'year' | 'total';
export type NamedRange = 'today' | 'yesterday' | 'last7d' | 'last30d' | 'last3m' | 'last12m' | 'thisMonth' | 'thisYear';

export interface SeriesPoint {
  /** `2023-05-03` (day), `2023-05` (month), `2023` (year) or `total`. */
  period: string;
  values: Record<string, MetricValue>;
}

export interface Series {
  store: string;
  timeZone: string;
  entity: string;
  granularity: Granularity;
  from: Day;
  to: Day;
  points: SeriesPoint[];
  totals: Record<string, MetricValue>;
  /** When the answer was read (live Redis data merged in). */
  asOf: string;
  dynamoRequests: number;
}

export interface SeriesQuery {
  /** `store` or `product:P1`. */
  entity: string;
  metrics: readonly string[];
  granularity: Granularity;
  range?: NamedRange;
  from?: Day;
  to?: Day;
}

export interface TopItem {
  id: string;
  value: MetricValue;
}

export interface TopQuery {
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

export interface ApiClient {
  store(): Promise<StoreAnswer>;
  series(query: SeriesQuery): Promise<Series>;
  top(query: TopQuery): Promise<TopItem[]>;
}

export interface ApiClientOptions {
  key: string;
  /** Default `''`: the page's own origin (the query API serves the dashboard). */
  baseUrl?: string;
  fetch?: typeof fetch;
  /** Default 8 s; a slower answer counts as unreachable. */
  timeoutMs?: number;
  now?: () => number;
}

export function createApiClient(opts: ApiClientOptions): ApiClient {
  const baseUrl = opts.baseUrl ?? '';
  const doFetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const timeoutMs = opts.timeoutMs ?? 8_000;
  const now = opts.now ?? Date.now;

  async function get(path: string, params: URLSearchParams): Promise<unknown> {
    const qs = params.toString();
    const url = `${baseUrl}${path}${qs ? `?${qs}` : ''}`;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
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
      throw new UnreachableError(abort.signal.aborted ? `no answer within ${timeoutMs / 1000} s` : 'no connection', { cause: err });
    } finally {
      clearTimeout(timer);
    }
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    const detail = errorDetail(body);
    if (res.status === 401 || res.status === 403) throw new KeyRejectedError(res.status, detail?.message ?? `HTTP ${res.status}`);
    if (res.status >= 500 || res.status === 429) throw new UnreachableError(detail?.message ?? `HTTP ${res.status}`);
    if (res.status >= 400) throw new RequestError(res.status, detail?.message ?? `HTTP ${res.status}`, detail?.field);
    if (body === undefined || typeof body !== 'object' || body === null) {
      throw new UnreachableError(`${path} did not answer with JSON (HTTP ${res.status})`);
    }
    return body;
  }

  return {
    async store() {
      const sent = now();
      const info = (await get('/v1/store', new URLSearchParams())) as StoreInfo;
      const received = now();
      if (typeof info.timeZone !== 'string' || typeof info.today !== 'string' || !Array.isArray(info.metrics)) {
        throw new UnreachableError('/v1/store answered without timeZone, today and metrics');
      }
      const serverNow = Date.parse(info.now);
      return { info, clockOffsetMs: Number.isFinite(serverNow) ? serverNow - (sent + received) / 2 : 0 };
    },

    async series(q) {
      const params = new URLSearchParams({ entity: q.entity, metrics: q.metrics.join(','), granularity: q.granularity });
      if (q.range) params.set('range', q.range);
      if (q.from) params.set('from', q.from);
      if (q.to) params.set('to', q.to);
      const series = (await get('/v1/series', params)) as Series;
      if (!Array.isArray(series.points) || typeof series.asOf !== 'string') {
        throw new UnreachableError('/v1/series answered without points and asOf');
      }
      return series;
    },

    async top(q) {
      const params = new URLSearchParams({ entity: q.entity, metric: q.metric, range: q.range, limit: String(q.limit) });
      const top = (await get('/v1/top', params)) as { items?: TopItem[] };
      if (!Array.isArray(top.items)) throw new UnreachableError('/v1/top answered without items');
      return top.items;
    },
  };
}

/** An RFC 9457 problem body (application/problem+json): `detail` says what was wrong, `field` where. */
function errorDetail(body: unknown): { message?: string; field?: string } | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as Record<string, unknown>;
  const message = typeof b['detail'] === 'string' ? b['detail'] : typeof b['title'] === 'string' ? b['title'] : undefined;
  const field = typeof b['field'] === 'string' ? b['field'] : undefined;
  return { ...(message !== undefined ? { message } : {}), ...(field !== undefined ? { field } : {}) };
}
