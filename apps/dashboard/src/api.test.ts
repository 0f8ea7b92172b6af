import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createApiClient, retryAfterMs, type ApiClient } from './api';
import { KeyRejectedError, RateLimitedError, RequestError, UnreachableError } from './errors';
import { allOrAbort } from './live';

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

/** A /v1/store answer. */
const STORE = {
  store: 'S1',
  timeZone: 'UTC',
  now: '1970-01-01T00:00:00.000Z',
  today: '1970-01-01',
  currency: null,
  metrics: [],
  entities: [],
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
    const { fetch } = fakeFetch(() => json(200, { ...STORE, timeZone: 'Asia/Tokyo', now: new Date(1_000_100 + 60_000).toISOString() }));
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
    // No patience: thrown at the first refusal (asking again is below).
    const err = await api
      .series({ entity: 'store', metrics: ['ViewCount'], granularity: 'day', range: 'today' }, { patienceMs: 0 })
      .catch((e: unknown) => e);
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
      const answer = api.series({ entity: 'store', metrics: ['ViewCount'], granularity: 'day', range: 'today' }, { signal: abort.signal });
      abort.abort();
      await expect(answer).rejects.toMatchObject({ name: 'AbortError' });
      expect(aborted).toHaveLength(1);
      // Aborted before it starts: not even sent.
      await expect(
        api.top({ entity: 'product', metric: 'ViewCount', range: 'last30d', limit: 10 }, { signal: abort.signal }),
      ).rejects.toMatchObject({ name: 'AbortError' });
      expect(aborted).toHaveLength(1);
    });
  });

  describe("under the store's request rate limit (429)", () => {
    beforeEach(() => vi.useFakeTimers());
    afterEach(() => vi.useRealTimers());

    const TOP = { ...SERIES, metric: 'ViewCount', range: 'last30d', items: [{ id: 'P1', value: 4 }] };

    /**
     * A query API with the store's limit as @fastify/rate-limit keeps it: `perWindow` requests in a window of
     * `windowSeconds` (default 1) that starts at the first one counted, the rest refused with Retry-After (the window's
     * rest, in whole seconds) and the limit in the problem; with `headers`, every answer tells the limit in
     * X-RateLimit-Limit, -Remaining and -Reset, as the query API does. Each request reaches it `up(i)` ms after it is
     * sent and is answered `down(i)` ms later; `sent` has each one's name (its entity, or "store") in the order sent,
     * `log` its name, when it was counted and its status (and `sentAt` when it was sent). `state.counting` false:
     * requests are counted nowhere and answered without X-RateLimit-* (the limit turned off, or its Redis down).
     */
    function limitedApi(
      perWindow: number,
      up = (_i: number) => 5,
      down = (_i: number) => 5,
      { headers = false, windowSeconds = 1 }: { headers?: boolean; windowSeconds?: number } = {},
    ) {
      const sent: string[] = [];
      const sentAt: number[] = [];
      const log: Array<{ name: string; at: number; status: number }> = [];
      const state = { counting: true };
      let windowEnd = -Infinity;
      let count = 0;
      const fetch = ((input: RequestInfo | URL) =>
        new Promise<Response>((resolve) => {
          const i = sent.length;
          const url = new URL(String(input));
          const name = url.searchParams.get('entity') ?? 'store';
          sent.push(name);
          sentAt.push(Date.now());
          setTimeout(() => {
            const at = Date.now();
            const answer = url.pathname === '/v1/top' ? TOP : url.pathname === '/v1/store' ? STORE : SERIES;
            if (!state.counting) {
              log.push({ name, at, status: 200 });
              setTimeout(() => resolve(json(200, answer)), down(i));
              return;
            }
            if (at >= windowEnd) [windowEnd, count] = [at + windowSeconds * 1_000, 0];
            const status = ++count <= perWindow ? 200 : 429;
            log.push({ name, at, status });
            const reset = String(Math.ceil((windowEnd - at) / 1_000));
            const told: Record<string, string> = headers
              ? {
                  'x-ratelimit-limit': String(perWindow),
                  'x-ratelimit-remaining': String(Math.max(0, perWindow - count)),
                  'x-ratelimit-reset': reset,
                }
              : {};
            const res =
              status === 200
                ? new Response(JSON.stringify(answer), { status, headers: { 'content-type': 'application/json', ...told } })
                : new Response(
                    JSON.stringify({
                      ...problem(429, 'Too Many Requests', 'TALLY_ERR_RATE_LIMITED', 'store "S1" is over its rate limit'),
                      requestsPerSecond: perWindow / windowSeconds,
                      windowSeconds,
                    }),
                    {
                      status,
                      headers: { 'content-type': 'application/problem+json', 'retry-after': reset, ...told },
                    },
                  );
            setTimeout(() => resolve(res), down(i));
          }, up(i));
        })) as typeof globalThis.fetch;
      return { sent, sentAt, log, state, fetch, api: createApiClient({ key: 'k', baseUrl: 'http://t', fetch }) };
    }

    /** The dashboard's requests: today (first, patience 2.5 s), the charts' 4 (60 s) and the 3 top lists (15 s). */
    const today = (api: ApiClient) =>
      api.series({ entity: 'today', metrics: ['ViewCount'], granularity: 'day', range: 'today' }, { first: true, patienceMs: 2_500 });
    const refresh = (api: ApiClient) => [
      ...['days', 'compared', 'months', 'yesterday'].map((name) =>
        api.series({ entity: name, metrics: ['ViewCount'], granularity: 'day', range: 'today' }, { patienceMs: 60_000 }),
      ),
      ...['top-views', 'top-orders', 'top-pages'].map((name) =>
        api.top({ entity: name, metric: 'ViewCount', range: 'last30d', limit: 10 }, { patienceMs: 15_000 }),
      ),
    ];

    it('paces the page under a limit of 2 a second: refused only before it knows the limit, never failing, today first', async () => {
      const { api, sent, log } = limitedApi(
        2,
        (i) => 2 + ((i * 37) % 60),
        (i) => 3 + ((i * 53) % 90),
      );
      // The page opens: everything at once, the limit not known yet. Each request is answered, none fails.
      const opened = Promise.all([...refresh(api), today(api)]);
      await vi.advanceTimersByTimeAsync(10_000);
      await expect(opened).resolves.toHaveLength(8);
      const refused = log.filter((l) => l.status === 429);
      expect(refused.length).toBeGreaterThan(0);
      // Only in the API's first window, then each refused one in its turn, today's numbers (refused too) first.
      expect(refused.every((l) => l.at < log[0]!.at + 1_000)).toBe(true);
      expect(refused.map((l) => l.name)).toContain('today');
      expect(sent.slice(8, 9)).toEqual(['today']);

      // Then two minutes of polling: today every 2.5 s, the charts and the lists again every 10 s (today moved).
      const from = log.length;
      const failures: unknown[] = [];
      const asked: Promise<unknown>[] = [];
      for (let t = 0; t < 120_000; t += 2_500) {
        asked.push(today(api).catch((e: unknown) => failures.push(e)));
        if (t % 10_000 === 0) asked.push(...refresh(api).map((p) => p.catch((e: unknown) => failures.push(e))));
        await vi.advanceTimersByTimeAsync(2_500);
      }
      await vi.advanceTimersByTimeAsync(10_000);
      await Promise.all(asked);
      expect(failures).toEqual([]);
      expect(log.slice(from).filter((l) => l.status === 429)).toEqual([]);
      expect(log.length - from).toBe(48 + 12 * 7);
    });

    it("learns the limit from the first answer's X-RateLimit-* headers: a new page at 2 a second is never refused", async () => {
      const { api, sent, log } = limitedApi(
        2,
        (i) => 2 + ((i * 37) % 60),
        (i) => 3 + ((i * 53) % 90),
        { headers: true },
      );
      // The page opens as main.ts opens it: /v1/store alone, then everything at once.
      const opened = api.store().then(() => Promise.all([...refresh(api), today(api)]));
      await vi.advanceTimersByTimeAsync(10_000);
      await expect(opened).resolves.toHaveLength(8);
      expect(log.filter((l) => l.status === 429)).toEqual([]);
      // /v1/store alone, then 2 a window from its answer on: never 3 counted within a second, 9 requests in 4 s or more.
      expect(sent[0]).toBe('store');
      const at = log.map((l) => l.at);
      expect(at.slice(2).filter((t, i) => t - at[i]! < 1_000)).toEqual([]);
      expect(at.at(-1)! - at[0]!).toBeGreaterThanOrEqual(4_000);

      // Then two minutes of polling: never refused.
      const failures: unknown[] = [];
      const asked: Promise<unknown>[] = [];
      for (let t = 0; t < 120_000; t += 2_500) {
        asked.push(today(api).catch((e: unknown) => failures.push(e)));
        if (t % 10_000 === 0) asked.push(...refresh(api).map((p) => p.catch((e: unknown) => failures.push(e))));
        await vi.advanceTimersByTimeAsync(2_500);
      }
      await vi.advanceTimersByTimeAsync(10_000);
      await Promise.all(asked);
      expect(failures).toEqual([]);
      expect(log.filter((l) => l.status === 429)).toEqual([]);
    });

    it("keeps to a longer window told by its first answer's X-RateLimit-Reset, whichever answer comes first", async () => {
      // 3 requests per window of 5 s.
      const { api, log } = limitedApi(3, undefined, undefined, { headers: true, windowSeconds: 5 });
      const opened = api.store().then(() => Promise.all([...refresh(api), today(api)]));
      await vi.advanceTimersByTimeAsync(30_000);
      await expect(opened).resolves.toHaveLength(8);
      expect(log.filter((l) => l.status === 429)).toEqual([]);
      expect(log).toHaveLength(9);
      // A page opened in the middle of the store's window (another page asked first): its first answer tells only the
      // rest of that window and what is left of it (X-RateLimit-Remaining: 1), which the page keeps to: never refused.
      const late = limitedApi(3, undefined, undefined, { headers: true, windowSeconds: 5 });
      const other = createApiClient({ key: 'k', baseUrl: 'http://t', fetch: late.fetch }).store();
      await vi.advanceTimersByTimeAsync(3_000);
      await other;
      const page = late.api.store().then(() => Promise.all([...refresh(late.api), today(late.api)]));
      await vi.advanceTimersByTimeAsync(60_000);
      await expect(page).resolves.toHaveLength(8);
      expect(late.log.filter((l) => l.status === 429)).toEqual([]);
      expect(late.log).toHaveLength(10);
    });

    it('stops pacing when answers stop telling the limit (turned off, or its Redis down), and keeps to it again once told', async () => {
      const { api, log, state, sentAt } = limitedApi(2, undefined, undefined, { headers: true });
      // The page opens under 2 a second and learns it from its first answer.
      const opened = api.store();
      await vi.advanceTimersByTimeAsync(100);
      await opened;
      // Answers come without X-RateLimit-* (QUERY_RATE_LIMIT_PER_SECOND=0, or the limit's Redis down: nothing counted).
      await vi.advanceTimersByTimeAsync(5_000);
      state.counting = false;
      const one = api.series({ entity: 'one', metrics: ['ViewCount'], granularity: 'day', range: 'today' });
      await vi.advanceTimersByTimeAsync(100);
      await one;
      // From that answer on, nothing waits: 8 requests asked at once go at once.
      const from = sentAt.length;
      const asked = Date.now();
      const all = Promise.all(refresh(api).concat(today(api)));
      await vi.advanceTimersByTimeAsync(10_000);
      await all;
      expect(sentAt.slice(from).map((t) => t - asked)).toEqual(Array(8).fill(0));
      // The limit counts again: learned from the next answer, and kept to without a refusal.
      state.counting = true;
      const back = api.store();
      await vi.advanceTimersByTimeAsync(100);
      await back;
      const counted = log.length;
      const again = Promise.all([...refresh(api), today(api)]);
      await vi.advanceTimersByTimeAsync(10_000);
      await expect(again).resolves.toHaveLength(8);
      expect(log.slice(counted).filter((l) => l.status === 429)).toEqual([]);
    });

    it('waits for nothing under a generous limit (the default): every request goes at once', async () => {
      const { api, log } = limitedApi(5_000);
      const all = Promise.all([today(api), ...refresh(api), today(api), ...refresh(api)]);
      await vi.advanceTimersByTimeAsync(5);
      expect(log).toHaveLength(16);
      expect(new Set(log.map((l) => l.at)).size).toBe(1);
      await vi.advanceTimersByTimeAsync(5);
      await expect(all).resolves.toHaveLength(16);
    });

    it('a run of 4 requests sent together succeeds under a limit of 2 or 1 per window, each refused one asked again alone', async () => {
      const two = limitedApi(2);
      const names = ['days', 'compared', 'months', 'yesterday'];
      const run = (api: ApiClient) =>
        allOrAbort<Array<Awaited<ReturnType<ApiClient['series']>>>>(
          names.map(
            (name) => (signal: AbortSignal) =>
              api.series({ entity: name, metrics: ['ViewCount'], granularity: 'day', range: 'today' }, { signal, patienceMs: 60_000 }),
          ),
        );
      const ran = run(two.api);
      await vi.advanceTimersByTimeAsync(1_100);
      await expect(ran).resolves.toHaveLength(4);
      // The answered ones are kept, not asked again.
      expect(two.log.map((l) => `${l.name} ${l.status}`)).toEqual([
        'days 200',
        'compared 200',
        'months 429',
        'yesterday 429',
        'months 200',
        'yesterday 200',
      ]);

      // A limit of 1 per window: one request per window, in the order asked.
      const one = limitedApi(1);
      const slow = run(one.api);
      await vi.advanceTimersByTimeAsync(5_000);
      await expect(slow).resolves.toHaveLength(4);
      expect(one.log.filter((l) => l.status === 200).map((l) => l.name)).toEqual(names);
    });

    it('asks a refused request again while its patience lasts, then throws the 429 (the banner)', async () => {
      // Another client takes the store's whole budget: every request of this page is refused.
      let calls = 0;
      const api = createApiClient({
        key: 'k',
        baseUrl: 'http://t',
        fetch: fakeFetch(() => {
          calls++;
          return new Response(
            JSON.stringify({
              ...problem(429, 'Too Many Requests', 'TALLY_ERR_RATE_LIMITED', 'over'),
              requestsPerSecond: 2,
              windowSeconds: 1,
            }),
            { status: 429, headers: { 'content-type': 'application/problem+json', 'retry-after': '1' } },
          );
        }).fetch,
      });
      // Today's numbers wait 2.5 s at most: refused at 0 s, 1 s and 2 s, then the error.
      const live = today(api).catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(2_000);
      expect(await live).toMatchObject({ code: 'TALLY_ERR_RATE_LIMITED', retryAfterMs: 1_000, requestsPerSecond: 2 });
      expect(calls).toBe(3);
      // A 503 is not asked again by the client (the poller does that).
      const down = createApiClient({
        key: 'k',
        baseUrl: 'http://t',
        fetch: fakeFetch(() => json(503, problem(503, 'x', 'TALLY_ERR_UNAVAILABLE', 'down'))).fetch,
      });
      await expect(today(down)).rejects.toBeInstanceOf(UnreachableError);
    });

    it('measures the server clock offset on the answered request, not over its refusals or its wait for its turn', async () => {
      // The server's clock is the browser's (offset 0) and answers at once. A limit of 1 request per 10 s: the first
      // /v1/store is refused for 10 s, the next waits 10 s for its turn. Half of either wait taken for a server clock
      // ahead of the browser's would make "updated … ago" 5 s older than it is.
      let calls = 0;
      const { fetch } = fakeFetch(() =>
        ++calls === 1
          ? new Response(
              JSON.stringify({
                ...problem(429, 'Too Many Requests', 'TALLY_ERR_RATE_LIMITED', 'over'),
                requestsPerSecond: 0.1,
                windowSeconds: 10,
              }),
              { status: 429, headers: { 'content-type': 'application/problem+json', 'retry-after': '10' } },
            )
          : json(200, { ...STORE, now: new Date(Date.now()).toISOString() }),
      );
      const api = createApiClient({ key: 'k', baseUrl: 'http://t', fetch });
      const refused = api.store();
      await vi.advanceTimersByTimeAsync(10_000);
      expect((await refused).clockOffsetMs).toBe(0);
      expect(calls).toBe(2);
      const paced = api.store();
      await vi.advanceTimersByTimeAsync(10_000);
      expect((await paced).clockOffsetMs).toBe(0);
      expect(calls).toBe(3);
    });

    it('stops a request waiting for its turn when its signal aborts, without sending it', async () => {
      const { api, log } = limitedApi(1);
      const abort = new AbortController();
      const first = api.series({ entity: 'a', metrics: ['ViewCount'], granularity: 'day', range: 'today' });
      const second = api.series({ entity: 'b', metrics: ['ViewCount'], granularity: 'day', range: 'today' });
      // Refused in the first window (the limit learned), now waiting for the next.
      await vi.advanceTimersByTimeAsync(100);
      const third = api
        .series({ entity: 'c', metrics: ['ViewCount'], granularity: 'day', range: 'today' }, { signal: abort.signal })
        .catch((e: unknown) => e);
      abort.abort();
      expect(await third).toMatchObject({ name: 'AbortError' });
      await vi.advanceTimersByTimeAsync(5_000);
      await expect(Promise.all([first, second])).resolves.toHaveLength(2);
      expect(log.map((l) => l.name)).toEqual(['a', 'b', 'b']);
    });
  });
});
