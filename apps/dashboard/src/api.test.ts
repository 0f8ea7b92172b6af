import { afterEach, describe, expect, it, vi } from 'vitest';
import { createApiClient, retryAfterMs } from './api';
import { KeyRejectedError, RateLimitedError, RequestError, UnreachableError } from './errors';

type Call = { url: string; init: RequestInit | undefined };

function fakeFetch(respond: (url: URL) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
    calls.push({ url: String(input), init });
    return respond(new URL(String(input)));
  }) as typeof globalThis.fetch;
  return { calls, fetch };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
/** An RFC 9457 problem body as the query API sends it. */
const problem = (status: number, title: string, code: string, detail: string) => ({ type: 'about:blank', title, status, code, detail });

const SERIES = {
  store: 'S1',
  timeZone: 'UTC',
  entity: 'product:P1',
  granularity: 'day',
  range: 'today',
  from: '2023-05-03',
  to: '2023-05-03',
  metrics: ['ViewCount', 'Revenue'],
  points: [{ period: '2023-05-03', values: { ViewCount: 3, Revenue: '19.99' } }],
  totals: { ViewCount: 3, Revenue: '19.99' },
  asOf: '2023-05-03T10:00:00.000Z',
  dynamoRequests: 1,
};

describe('createApiClient', () => {
  it('sends the read key and the query, and returns the answer', async () => {
    const { calls, fetch } = fakeFetch(() => json(200, SERIES));
    const api = createApiClient({ key: 'tly_k', baseUrl: 'http://tally.test', fetch });
    const s = await api.series({ entity: 'product:P1', metrics: ['ViewCount', 'Revenue'], granularity: 'day', range: 'today' });
    expect(s.totals).toEqual({ ViewCount: 3, Revenue: '19.99' });
    expect(s.estimated).toEqual([]); // SERIES has no `estimated`, as a query API of an older version answers
    const url = new URL(calls[0]!.url);
    expect(url.pathname).toBe('/v1/series');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      entity: 'product:P1',
      metrics: 'ViewCount,Revenue',
      granularity: 'day',
      range: 'today',
    });
    expect((calls[0]!.init!.headers as Record<string, string>)['authorization']).toBe('Bearer tly_k');
  });

  it('asks for explicit windows and top lists', async () => {
    const top = {
      store: 'S1',
      entity: 'product',
      metric: 'OrderCount',
      range: 'last30d',
      from: '2023-04-04',
      to: '2023-05-03',
      items: [{ id: 'P1', value: 4 }],
      asOf: '2023-05-03T10:00:00.000Z',
      dynamoRequests: 1,
    };
    const { calls, fetch } = fakeFetch((u) => (u.pathname === '/v1/top' ? json(200, top) : json(200, SERIES)));
    const api = createApiClient({ key: 'k', baseUrl: 'http://t', fetch });
    await api.series({ entity: 'store', metrics: ['OrderCount'], granularity: 'month', from: '2022-04-01', to: '2024-03-01' });
    expect(await api.top({ entity: 'product', metric: 'OrderCount', range: 'last30d', limit: 10 })).toEqual([{ id: 'P1', value: 4 }]);
    expect(new URL(calls[0]!.url).search).toBe('?entity=store&metrics=OrderCount&granularity=month&from=2022-04-01&to=2024-03-01');
    expect(new URL(calls[1]!.url).search).toBe('?entity=product&metric=OrderCount&range=last30d&limit=10');
  });

  it('estimates the server clock offset from /v1/store', async () => {
    // Sent at 1_000_000, answered at 1_000_200 on the browser clock; the server said 60 s later than the midpoint.
    const clock = [1_000_000, 1_000_200];
    const { fetch } = fakeFetch(() =>
      json(200, {
        store: 'S1',
        timeZone: 'Asia/Tokyo',
        now: new Date(1_000_100 + 60_000).toISOString(),
        today: '1970-01-01',
        currency: null,
        metrics: [],
        entities: [],
      }),
    );
    const api = createApiClient({ key: 'k', baseUrl: 'http://t', fetch, now: () => clock.shift()! });
    const { info, clockOffsetMs } = await api.store();
    expect(info.timeZone).toBe('Asia/Tokyo');
    expect(clockOffsetMs).toBe(60_000);
  });

  it('tells a rejected key, an unreachable Tally and a refused request apart', async () => {
    const client = (respond: () => Response | Promise<Response>) =>
      createApiClient({ key: 'k', baseUrl: 'http://t', fetch: fakeFetch(respond).fetch });
    const store = (respond: () => Response | Promise<Response>) => client(respond).store();

    await expect(store(() => json(401, problem(401, 'Unauthorized', 'TALLY_ERR_UNAUTHORIZED', 'unknown key')))).rejects.toBeInstanceOf(
      KeyRejectedError,
    );
    await expect(store(() => json(403, problem(403, 'Forbidden', 'TALLY_ERR_FORBIDDEN', 'not a read key')))).rejects.toMatchObject({
      code: 'TALLY_ERR_KEY_REJECTED',
      status: 403,
    });
    await expect(store(() => json(503, problem(503, 'Service Unavailable', 'TALLY_ERR_UNAVAILABLE', 'DynamoDB is down')))).rejects.toThrow(
      UnreachableError,
    );
    await expect(store(() => new Response('<html>bad gateway</html>', { status: 502 }))).rejects.toThrow(/Tally is not reachable/);
    await expect(store(() => new Response('<html>proxy page</html>', { status: 200 }))).rejects.toThrow(UnreachableError);
    await expect(store(() => Promise.reject(new TypeError('fetch failed')))).rejects.toThrow(/no connection/);
    // JSON that is not the query API's answer (the contract's schema refuses it).
    await expect(store(() => json(200, { store: 'S1', timeZone: 'UTC', today: '2023-05-03', metrics: [] }))).rejects.toThrow(
      /\/v1\/store answered something else than the query API's answer \(now: /,
    );
    await expect(
      client(() => json(200, { ...SERIES, from: null, to: null })).series({
        entity: 'store',
        metrics: ['ViewCount'],
        granularity: 'day',
        range: 'today',
      }),
    ).rejects.toThrow(/without from and to/);

    const refused = client(() =>
      json(400, { ...problem(400, 'Bad Request', 'TALLY_ERR_BAD_REQUEST', 'entity: unknown entity "shop"'), field: 'entity' }),
    );
    const err = await refused
      .series({ entity: 'shop', metrics: ['ViewCount'], granularity: 'day', range: 'today' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RequestError);
    expect(err).toMatchObject({ status: 400, field: 'entity', message: 'entity: unknown entity "shop"' });
  });

  it('passes the Retry-After of a 503 or a 429 on with the error', async () => {
    const at = Date.parse('2023-05-03T10:00:00.000Z');
    const refuse = (status: number, retryAfter?: string) =>
      createApiClient({
        key: 'k',
        baseUrl: 'http://t',
        now: () => at,
        fetch: fakeFetch(
          () =>
            new Response(JSON.stringify(problem(status, 'Unavailable', 'TALLY_ERR_UNAVAILABLE', 'DynamoDB is down')), {
              status,
              headers: { 'content-type': 'application/problem+json', ...(retryAfter ? { 'retry-after': retryAfter } : {}) },
            }),
        ).fetch,
      }).top({ entity: 'product', metric: 'ViewCount', range: 'last30d', limit: 10 });
    await expect(refuse(503, '5')).rejects.toMatchObject({ code: 'TALLY_ERR_UNREACHABLE', retryAfterMs: 5_000 });
    await expect(refuse(503, '1')).rejects.toMatchObject({ retryAfterMs: 1_000 });
    // A 429 is Tally answering (the store is over its rate limit), not Tally unreachable; its Retry-After comes along.
    await expect(refuse(429, 'Wed, 03 May 2023 10:00:30 GMT')).rejects.toMatchObject({
      code: 'TALLY_ERR_RATE_LIMITED',
      retryAfterMs: 30_000,
    });
    const without = await refuse(503).catch((e: unknown) => e);
    expect(without).toBeInstanceOf(UnreachableError);
    expect((without as UnreachableError).retryAfterMs).toBeUndefined();
    expect(retryAfterMs('soon', at)).toBeUndefined();
    expect(retryAfterMs('Wed, 03 May 2023 09:00:00 GMT', at)).toBe(0);
  });

  it("tells a store over its request rate limit (429) apart from an unreachable Tally, with the API's words", async () => {
    const body = {
      ...problem(
        429,
        'Too Many Requests',
        'TALLY_ERR_RATE_LIMITED',
        'store "NZ" is over its rate limit of 2 requests per second (2 per window of 1 s, QUERY_RATE_LIMIT_PER_SECOND), counted over every API key of the store; retry after 1 s',
      ),
      requestsPerSecond: 2,
      windowSeconds: 1,
    };
    const api = createApiClient({
      key: 'k',
      baseUrl: 'http://t',
      fetch: fakeFetch(
        () =>
          new Response(JSON.stringify(body), { status: 429, headers: { 'content-type': 'application/problem+json', 'retry-after': '1' } }),
      ).fetch,
    });
    const err = await api.series({ entity: 'store', metrics: ['ViewCount'], granularity: 'day', range: 'today' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitedError);
    expect(err).not.toBeInstanceOf(UnreachableError);
    expect(err).toMatchObject({ code: 'TALLY_ERR_RATE_LIMITED', retryAfterMs: 1_000, requestsPerSecond: 2 });
    expect((err as Error).message).not.toMatch(/not reachable/);
    expect((err as Error).message).toBe(`Too many requests for this store (${body.detail})`);
  });

  it('gives up on an answer that does not come', async () => {
    const fetch = ((_input: RequestInfo | URL, init?: RequestInit) =>
      new Promise((_resolve, reject) =>
        init?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
      )) as typeof globalThis.fetch;
    const api = createApiClient({ key: 'k', baseUrl: 'http://t', fetch, timeoutMs: 20 });
    await expect(api.top({ entity: 'product', metric: 'ViewCount', range: 'last30d', limit: 10 })).rejects.toThrow(
      /no answer within 0.02 s/,
    );
  });

  describe('slow answers and cancelled ones', () => {
    afterEach(() => vi.useRealTimers());
    /** A fetch that answers `body` after `ms`, or rejects when its signal aborts first. */
    const slowFetch = (ms: number, body: unknown, aborted: string[]) =>
      ((input: RequestInfo | URL, init?: RequestInit) =>
        new Promise((resolve, reject) => {
          const stop = () => {
            clearTimeout(timer);
            aborted.push(String(input));
            reject(new DOMException('aborted', 'AbortError'));
          };
          const timer = setTimeout(() => resolve(json(200, body)), ms);
          if (init?.signal?.aborted) stop();
          else init?.signal?.addEventListener('abort', stop);
        })) as typeof globalThis.fetch;

    it('waits longer than the query API itself may take (30 s), then gives up', async () => {
      vi.useFakeTimers();
      const aborted: string[] = [];
      // 20 s: DynamoDB requests of 3 s tried twice, a few in a row, as the API may legitimately take.
      const slow = createApiClient({ key: 'k', baseUrl: 'http://t', fetch: slowFetch(20_000, SERIES, aborted) });
      const answer = slow.series({ entity: 'product:P1', metrics: ['ViewCount'], granularity: 'day', range: 'today' });
      await vi.advanceTimersByTimeAsync(20_000);
      await expect(answer).resolves.toMatchObject({ totals: { ViewCount: 3 } });

      const hung = createApiClient({ key: 'k', baseUrl: 'http://t', fetch: slowFetch(60_000, SERIES, aborted) });
      const none = hung.series({ entity: 'store', metrics: ['ViewCount'], granularity: 'day', range: 'today' }).catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(30_000);
      expect(await none).toMatchObject({ code: 'TALLY_ERR_UNREACHABLE', message: 'Tally is not reachable (no answer within 30 s)' });
    });

    it("stops a request when the caller's signal aborts", async () => {
      const aborted: string[] = [];
      const api = createApiClient({ key: 'k', baseUrl: 'http://t', fetch: slowFetch(60_000, SERIES, aborted) });
      const abort = new AbortController();
      const answer = api.series({ entity: 'store', metrics: ['ViewCount'], granularity: 'day', range: 'today' }, abort.signal);
      abort.abort();
      await expect(answer).rejects.toMatchObject({ name: 'AbortError' });
      expect(aborted).toHaveLength(1);
      // Aborted before it starts: not even sent on its way.
      await expect(api.top({ entity: 'product', metric: 'ViewCount', range: 'last30d', limit: 10 }, abort.signal)).rejects.toMatchObject({
        name: 'AbortError',
      });
      expect(aborted).toHaveLength(2);
    });
  });
});
