// The dashboard in a real browser against the real stack: redis-server, dynalite, the four apps as processes,
// events sent to the collector over HTTP, and Debian's Chromium driven by playwright-core. What the page shows
// must be what the query API answers, and must change without a reload when events arrive.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createDynamoClient } from '@tally/dynamo';
import { formatDate, localDate, localTime } from '@tally/key-layout';
import { createTenantAdmin } from '@tally/tenants';
import { REPO_ROOT, waitFor, type AppHandle } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { chromium, type Browser, type BrowserContext, type Page, type Response as PageResponse } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatDayLong, formatDayRange, formatMetric, type MetricValue } from './format';
import { addDays, comparisonWindow, listDays, type Day } from './periods';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const SCREENSHOTS = path.join(REPO_ROOT, 'test-output');
const DIST = path.join(REPO_ROOT, 'apps/dashboard/dist');

const STORE = 'DASH_E2E';
/**
 * Far from UTC and from the browser's zone below, so a day taken from the wrong clock shows; and at least an hour
 * before its next midnight when the file starts, so every "today" below is the store day the events were sent on
 * (the file takes minutes). Auckland and Tokyo are 3-4 hours apart: one of them always qualifies.
 */
const STORE_TZ = ['Pacific/Auckland', 'Asia/Tokyo'].find((tz) => localTime(Date.now(), tz).hour < 23)!;
const BROWSER_TZ = 'America/Los_Angeles';
const LOCALE = 'en-US';
const METRICS = ['ViewCount', 'OrderCount', 'Revenue'] as const;
const SCALE: Record<string, number> = { UniqueVisitors: 0, ViewCount: 0, OrderCount: 0, Revenue: 2, PageViewCount: 0, PageViews: 0 };
/** The store's currency (set with the tenants admin), shown on revenue. */
const CURRENCY = 'EUR';
/** A value as the page must show it: money in the store's currency, counts grouped. */
const shown = (metric: string, v: MetricValue) => formatMetric(v, SCALE[metric]!, LOCALE, metric === 'Revenue' ? CURRENCY : undefined);
/** The metrics of the store's charts and CSV files, in the page's order (unique visitors when the API counts them). */
const STORE_CHART_METRICS = ['UniqueVisitors', 'ViewCount', 'OrderCount', 'Revenue', 'PageViewCount'];

const stack = useStack();
let queryApi: AppHandle;
let collector: AppHandle;
let readKey: string;
let ingestKey: string;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing; install it with: apt-get install -y chromium (.ci/run does)`);
  // The query API serves apps/dashboard/dist: build it when it is missing or stale, as `npm start` does.
  execFileSync(process.execPath, ['apps/dashboard/scripts/build.mjs', '--if-stale'], { cwd: REPO_ROOT, stdio: 'pipe' });

  const dynamo = createDynamoClient({ endpoint: stack.dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo, table: stack.table });
  await admin.createTenant(STORE, { timeZone: STORE_TZ });
  await admin.setCurrency(STORE, CURRENCY);
  ingestKey = await admin.issueKey(STORE, ['ingest'], 'dashboard e2e ingest');
  readKey = await admin.issueKey(STORE, ['read'], 'dashboard e2e read');
  dynamo.destroy();

  const env = { BUCKET_SECONDS: '1', LOG_LEVEL: 'warn' };
  [collector, , , queryApi] = await Promise.all([
    stack.startApp('collector', { env }),
    stack.startApp('bucket-aggregator', { env }),
    stack.startApp('dynamo-writer', { env }),
    stack.startApp('query-api', { env: { ...env, DASHBOARD_DIR: DIST } }),
  ]);

  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  context = await browser.newContext({
    locale: LOCALE,
    timezoneId: BROWSER_TZ,
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
  mkdirSync(SCREENSHOTS, { recursive: true });
}, 120_000);

afterAll(async () => {
  await browser?.close();
});

// ---- helpers ----

async function sendEvents(events: object[]): Promise<void> {
  const res = await fetch(`${collector.url}/v1/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ingestKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  expect(res.status, await res.clone().text()).toBe(202);
}

const view = (product: string, visitor: string) => ({ type: 'view', ts: new Date().toISOString(), dims: { product, visitor } });
const order = (value: number, visitor: string) => ({ type: 'order', ts: new Date().toISOString(), value, dims: { visitor } });
const orderItem = (product: string, value: number, visitor: string) => ({
  type: 'order_item',
  ts: new Date().toISOString(),
  value,
  dims: { product, visitor },
});
const pageView = (page: string, visitor: string) => ({ type: 'page_view', ts: new Date().toISOString(), dims: { page, visitor } });

async function api<T = any>(pathAndQuery: string): Promise<T> {
  const res = await fetch(queryApi.url + pathAndQuery, { headers: { authorization: `Bearer ${readKey}` } });
  expect(res.status, `${pathAndQuery}: ${await res.clone().text()}`).toBe(200);
  return (await res.json()) as T;
}

const todayOf = (entity: string) =>
  api(`/v1/series?entity=${encodeURIComponent(entity)}&metrics=${METRICS.join(',')}&range=today&granularity=day`);

/** Waits until the API's today totals for `entity` are exactly `expected` (the aggregator applied every batch). */
async function apiTodayIs(entity: string, expected: Record<string, MetricValue>): Promise<any> {
  return waitFor(
    async () => {
      const s = await todayOf(entity);
      if (!METRICS.every((m) => s.totals[m] === expected[m])) throw new Error(`the API answers ${JSON.stringify(s.totals)}`);
      return s;
    },
    { timeoutMs: 20_000, intervalMs: 200, message: `today's totals of ${entity} to be ${JSON.stringify(expected)}` },
  );
}

/** What a card shows: its raw value (data-value) and its text. */
async function card(metric: string): Promise<{ raw: string | null; text: string | null }> {
  const el = page.locator(`[data-testid="today-${metric}"]`);
  return { raw: await el.getAttribute('data-value'), text: await el.textContent() };
}

/** The page shows exactly the API's today totals, raw and formatted. */
async function expectCardsToMatch(apiTotals: Record<string, MetricValue>): Promise<void> {
  for (const m of METRICS) {
    await page.waitForSelector(`[data-testid="today-${m}"][data-value="${apiTotals[m]}"]`, { timeout: 15_000 });
    expect(await card(m)).toEqual({ raw: String(apiTotals[m]), text: shown(m, apiTotals[m]!) });
  }
}

type TopItem = { id: string; value: MetricValue };

/** Waits until the API's top list by `metric` (last 30 days) is exactly `expected`. */
async function apiTopIs(metric: string, expected: TopItem[]): Promise<TopItem[]> {
  return waitFor(
    async () => {
      const { items } = await api<{ items: TopItem[] }>(`/v1/top?entity=product&metric=${metric}&range=last30d&limit=10`);
      if (JSON.stringify(items) !== JSON.stringify(expected)) throw new Error(`the API answers ${JSON.stringify(items)}`);
      return items;
    },
    { timeoutMs: 20_000, intervalMs: 200, message: `the top products by ${metric} to be ${JSON.stringify(expected)}` },
  );
}

async function topList(metric: string): Promise<Array<{ id: string; value: string }>> {
  return page.$$eval(`[data-testid="top-${metric}"] li`, (lis) =>
    lis.map((li) => ({ id: li.querySelector('a')?.textContent ?? '', value: li.querySelector('.top-value')?.textContent ?? '' })),
  );
}

/** The page's top list shows exactly the API's items, formatted, in order (within one 15 s refresh). */
async function expectTopToMatch(metric: string, items: TopItem[]): Promise<void> {
  const want = items.map((i) => ({ id: i.id, value: shown(metric, i.value) }));
  await waitFor(async () => JSON.stringify(await topList(metric)) === JSON.stringify(want), {
    timeoutMs: 20_000,
    intervalMs: 200,
    message: `the page's top list by ${metric} to be ${JSON.stringify(want)}`,
  });
}

/** A range of days as the page shows it (Chromium's ICU puts plain spaces where Node's has thin ones). */
const shownRange = (from: Day, to: Day) => formatDayRange(from, to, LOCALE).replaceAll('\u2009', ' ');

async function waitForText(selector: string, text: string, timeout = 30_000): Promise<void> {
  await page.waitForFunction(([sel, want]) => document.querySelector(sel!)?.textContent === want, [selector, text] as const, { timeout });
}

async function signIn(key: string): Promise<void> {
  await page.waitForSelector('[data-testid="sign-in"]');
  await page.fill('#read-key', key);
  await page.click('[data-testid="sign-in"] button[type="submit"]');
}

// ---- the tests (in order: one browser page, one store) ----

describe('dashboard in Chromium against the running stack', () => {
  it('signs in with a read key and shows today exactly as the query API answers it, in the store time zone', async () => {
    const sentAt = Date.now();
    await sendEvents([
      view('P1', 'V1'),
      view('P1', 'V1'),
      view('P1', 'V2'),
      view('P2', 'V2'),
      order(19.99, 'V1'),
      order(19.99, 'V2'),
      orderItem('P1', 19.99, 'V1'),
    ]);
    const today = await apiTodayIs('store', { ViewCount: 4, OrderCount: 2, Revenue: '39.98' });

    await page.goto(`${queryApi.url}/`);
    await signIn(readKey);
    await expectCardsToMatch(today.totals);
    expect(await page.evaluate(() => localStorage.getItem('tally.readKey'))).toBe(readKey);

    const store = await api('/v1/store');
    expect(store).toMatchObject({ store: STORE, timeZone: STORE_TZ });
    expect(await page.textContent('[data-testid="store-name"]')).toBe(STORE);
    expect(await page.textContent('[data-testid="time-zone"]')).toMatch(new RegExp(`^${STORE_TZ.replace('/', '\\/')} \\(GMT[+-]\\d+\\)$`));
    // The store's day, not the browser's (Los Angeles) nor UTC: the day the events were sent on, there.
    expect(today.to).toBe(store.today);
    expect(store.today).toBe(formatDate(localDate(Date.parse(store.now), STORE_TZ)));
    expect(store.today).toBe(formatDate(localDate(sentAt, STORE_TZ)));
    expect(await page.textContent('[data-testid="today-date"]')).toBe(formatDayLong(store.today, LOCALE));
    expect(await page.textContent('[data-testid="freshness"]')).toMatch(/^updated (just now|\d s ago)$/);
    for (const m of METRICS) {
      const yesterday = await api(`/v1/series?entity=store&metrics=${m}&range=yesterday&granularity=day`);
      await waitForText(`[data-testid="yesterday-${m}"]`, `Yesterday (full day): ${shown(m, yesterday.totals[m])}`);
    }
    // Revenue is in the store's currency.
    expect(store.currency).toBe(CURRENCY);
    expect((await card('Revenue')).text).toBe('€39.98');

    // Unique visitors: the first card and the first chart, the API's number (V1 and V2 so far today).
    expect(await page.getAttribute('.cards .card:first-child', 'data-metric')).toBe('UniqueVisitors');
    expect(await page.getAttribute('.tabs .tab:first-child', 'data-metric')).toBe('UniqueVisitors');
    expect(store.metrics.map((m: { name: string }) => m.name)).toContain('UniqueVisitors');
    const uv = await api('/v1/series?entity=store&metrics=UniqueVisitors&range=today&granularity=day');
    expect(uv.totals.UniqueVisitors).toBe(2);
    await page.waitForSelector(`[data-testid="today-UniqueVisitors"][data-value="${uv.totals.UniqueVisitors}"]`, { timeout: 15_000 });
    expect(await card('UniqueVisitors')).toEqual({
      raw: String(uv.totals.UniqueVisitors),
      text: shown('UniqueVisitors', uv.totals.UniqueVisitors),
    });

    // The 30-day summary is the API's last30d total (of the metric picked: product views).
    await page.click('.tab[data-metric="ViewCount"]');
    const last30 = await api(`/v1/series?entity=store&metrics=ViewCount&range=last30d&granularity=day`);
    expect(last30.totals.ViewCount).toBe(4);
    await waitForText('[data-testid="days-total"]', formatMetric(last30.totals.ViewCount, 0, LOCALE));
    expect(await page.locator('[data-testid="chart-days"] canvas').count()).toBe(1);
    expect(await page.locator('[data-testid="chart-months"] canvas').count()).toBe(1);

    // Top products are the API's /v1/top, linking to each product's page. The API ranks from every bucket, the open
    // one included, so its lists agree with the cards at once; the page asks every 15 s.
    const topViews = await apiTopIs('ViewCount', [
      { id: 'P1', value: 3 },
      { id: 'P2', value: 1 },
    ]);
    await expectTopToMatch('ViewCount', topViews);
    await expectTopToMatch('OrderCount', await apiTopIs('OrderCount', [{ id: 'P1', value: 1 }]));
    expect(await page.getAttribute('[data-testid="top-ViewCount"] a[data-product="P1"]', 'href')).toBe('#/product/P1');
  });

  it('updates the live numbers without a reload when events arrive', async () => {
    await page.evaluate(() => ((window as unknown as { sameDocument: boolean }).sameDocument = true));
    const before = await card('ViewCount');
    await sendEvents([view('P1', 'V3'), view('P1', 'V3'), order(10.02, 'V3'), orderItem('P1', 10.02, 'V3')]);
    // The API writes exact decimals without trailing zeros ('50'); the page shows them at the metric's scale.
    const today = await apiTodayIs('store', { ViewCount: 6, OrderCount: 3, Revenue: '50' });

    await expectCardsToMatch(today.totals);
    expect(before.raw).toBe('4');
    expect(await card('Revenue')).toEqual({ raw: '50', text: '€50.00' });
    expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);

    // Today's point moves the 30-day total at once; the month total and the top lists follow within 10 s.
    await waitForText('[data-testid="days-total"]', '6', 5_000);
    await waitForText('[data-testid="month-total"]', '6');
    await expectTopToMatch(
      'ViewCount',
      await apiTopIs('ViewCount', [
        { id: 'P1', value: 5 },
        { id: 'P2', value: 1 },
      ]),
    );
    await expectTopToMatch('OrderCount', await apiTopIs('OrderCount', [{ id: 'P1', value: 2 }]));
    expect(await page.textContent('[data-testid="freshness"]')).toMatch(/^updated (just now|\d s ago)$/);

    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard.png'), fullPage: true });
  });

  it('lists the top pages by their paths, as the API decodes them', async () => {
    await sendEvents([
      ...['/', '/shop/shoes', '/shop/shoes', '/blog/ünïcode-ß', '/shop/shoes'].map((p, i) => pageView(p, `V${i}`)),
      pageView('/', 'V9'),
    ]);
    const want = [
      { path: '/shop/shoes', value: 3 },
      { path: '/', value: 2 },
      { path: '/blog/ünïcode-ß', value: 1 },
    ];
    const items = await waitFor(
      async () => {
        const { items } = await api<{ items: Array<{ id: string; path: string; value: number }> }>(
          '/v1/top?entity=page&metric=PageViews&range=last30d&limit=10',
        );
        if (JSON.stringify(items.map((i) => ({ path: i.path, value: i.value }))) !== JSON.stringify(want))
          throw new Error(`the API answers ${JSON.stringify(items)}`);
        return items;
      },
      { timeoutMs: 20_000, intervalMs: 200, message: `the top pages to be ${JSON.stringify(want)}` },
    );
    expect(items.map((i) => i.id)).toEqual(want.map((w) => Buffer.from(w.path).toString('base64url')));
    const shownList = () =>
      page.$$eval('[data-testid="top-page-PageViews"] li', (lis) =>
        lis.map((li) => ({
          path: li.querySelector('.top-key')?.textContent ?? '',
          value: li.querySelector('.top-value')?.textContent ?? '',
        })),
      );
    const expected = items.map((i) => ({ path: i.path, value: shown('PageViews', i.value) }));
    await waitFor(async () => JSON.stringify(await shownList()) === JSON.stringify(expected), {
      timeoutMs: 20_000,
      intervalMs: 200,
      message: `the page's top pages to be ${JSON.stringify(expected)}`,
    });
    expect(await page.textContent('#top-pages-title')).toBe('Top pages');
    await page.locator('[data-testid="top-pages"]').screenshot({ path: path.join(SCREENSHOTS, 'dashboard-top-pages.png') });
  });

  it('shows any picked range beside the period it is compared with, exactly as the API answers both', async () => {
    const store = await api('/v1/store');
    const today: Day = store.today;
    /** The page's summary of the picked range and its comparison is the API's totals of both, formatted. */
    const expectRange = async (title: string, from: Day, to: Day, metric: string) => {
      const c = comparisonWindow({ from, to });
      await waitForText('[data-testid="days-title"]', title);
      expect(await page.inputValue('[data-testid="range-from"]')).toBe(from);
      expect(await page.inputValue('[data-testid="range-to"]')).toBe(to);
      expect(await page.getAttribute('[data-testid="range-comparison"]', 'data-from')).toBe(c.from);
      expect(await page.getAttribute('[data-testid="range-comparison"]', 'data-to')).toBe(c.to);
      const cur = await api(`/v1/series?entity=store&metrics=${metric}&from=${from}&to=${to}&granularity=day`);
      const prev = await api(`/v1/series?entity=store&metrics=${metric}&from=${c.from}&to=${c.to}&granularity=day`);
      await waitForText('[data-testid="days-total"]', shown(metric, cur.totals[metric]));
      await waitForText('[data-testid="days-previous-total"]', shown(metric, prev.totals[metric]));
      return { cur, prev, c };
    };

    // The default: the last 30 days against the 30 before.
    await page.click('.tab[data-metric="ViewCount"]');
    await expectRange('Last 30 days', addDays(today, -29), today, 'ViewCount');

    await page.selectOption('[data-testid="range-preset"]', 'last7d');
    const week = await expectRange('Last 7 days', addDays(today, -6), today, 'ViewCount');
    expect(week.cur.totals.ViewCount).toBe(6);
    expect(await page.textContent('[data-testid="range-comparison-days"]')).toBe(shownRange(week.c.from, week.c.to));

    // Any range: from the day before yesterday to today, compared with the three days before; revenue in euros.
    const from = addDays(today, -2);
    await page.fill('[data-testid="range-from"]', from);
    await page.click('.tab[data-metric="Revenue"]');
    const custom = await expectRange('Custom range', from, today, 'Revenue');
    expect(await page.textContent('[data-testid="days-total"]')).toBe('€50.00');
    expect(custom.cur.totals.Revenue).toBe('50');
    // A range that cannot be asked is refused in words, and the range shown stays.
    await page.fill('[data-testid="range-to"]', addDays(today, 1));
    await waitForText('[data-testid="range-error"]', 'The range ends after today.');
    expect(await page.getAttribute('[data-testid="range-comparison"]', 'data-from')).toBe(custom.c.from);
    await page.fill('[data-testid="range-to"]', today);
    await page.waitForSelector('[data-testid="range-error"][hidden]', { state: 'attached' });
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-range.png'), fullPage: true });

    // CSV of the range chart: every day of the range and of its comparison, every metric, as the API answered.
    const counted = STORE_CHART_METRICS.filter((m) => store.metrics.some((x: { name: string }) => x.name === m));
    // A distinct count has a column saying which of its values are estimates.
    const columns = (prefix: string) => [
      ...counted.map((m) => prefix + m),
      ...counted.filter((m) => m === 'UniqueVisitors').map((m) => `${prefix}${m}_estimate`),
    ];
    const answer = async (w: { from: Day; to: Day }) => {
      const s = await api(`/v1/series?entity=store&metrics=${counted.join(',')}&from=${w.from}&to=${w.to}&granularity=day`);
      const byDay = new Map<string, { values: Record<string, MetricValue>; estimated?: string[] }>(
        s.points.map((p: { period: string }) => [p.period, p]),
      );
      return (day: Day) => [
        ...counted.map((m) => String(byDay.get(day)?.values[m] ?? 0)),
        ...counted.filter((m) => m === 'UniqueVisitors').map((m) => String(byDay.get(day)?.estimated?.includes(m) ?? false)),
      ];
    };
    const [cur, prev] = await Promise.all([answer({ from, to: today }), answer(custom.c)]);
    const days = listDays(from, today);
    const previousDays = listDays(custom.c.from, custom.c.to);
    const expectedCsv = [
      ['day', ...columns(''), 'compared_day', ...columns('compared_')].join(','),
      ...days.map((d, i) => [d, ...cur(d), previousDays[i], ...prev(previousDays[i]!)].join(',')),
      '',
    ].join('\r\n');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="csv-days"]')]);
    expect(download.suggestedFilename()).toBe(`tally-store-days-${from}_${today}.csv`);
    const csv = readFileSync((await download.path())!, 'utf8');
    expect(csv).toBe(expectedCsv);
    expect(csv).toContain(`${today},`);
    // And of the 12-month chart: this month's row is the API's month answer.
    const [monthsDownload] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="csv-months"]')]);
    const monthsCsv = readFileSync((await monthsDownload.path())!, 'utf8').split('\r\n');
    expect(monthsCsv[0]).toBe(['month', ...columns(''), 'compared_month', ...columns('compared_')].join(','));
    const month = await api(
      `/v1/series?entity=store&metrics=${counted.join(',')}&from=${today.slice(0, 7)}-01&to=${today}&granularity=month`,
    );
    const thisMonth = month.points.find((p: { period: string }) => p.period === today.slice(0, 7));
    expect(
      monthsCsv
        .find((l) => l.startsWith(`${today.slice(0, 7)},`))!
        .split(',')
        .slice(1, 1 + counted.length),
    ).toEqual(counted.map((m) => String(thisMonth.values[m] ?? 0)));

    await page.selectOption('[data-testid="range-preset"]', 'last30d');
    await expectRange('Last 30 days', addDays(today, -29), today, 'Revenue');
    await page.click('.tab[data-metric="ViewCount"]');
  });

  it('says why a range is refused, without asking it again and again, and answers the next range picked', async () => {
    const today: Day = (await api('/v1/store')).today;
    const refusedFrom = addDays(today, -3);
    // The API refuses a query that would read too many DynamoDB items (MAX_ITEMS_PER_QUERY) with a 400: here the
    // browser's request for one range gets that answer.
    const isRefused = (url: URL) =>
      url.pathname === '/v1/series' && url.searchParams.get('from') === refusedFrom && url.searchParams.get('to') === today;
    let refused = 0;
    await page.route(isRefused, (route) => {
      refused++;
      return route.fulfill({
        status: 400,
        contentType: 'application/problem+json',
        body: JSON.stringify({
          type: 'about:blank',
          title: 'Bad Request',
          status: 400,
          code: 'TALLY_ERR_BAD_REQUEST',
          detail: 'from: the query reads 2100 DynamoDB items; at most 2000',
          field: 'from',
        }),
      });
    });
    try {
      await page.fill('[data-testid="range-from"]', refusedFrom);
      await waitForText('[data-testid="history-error"]', 'Tally could not answer: from: the query reads 2100 DynamoDB items; at most 2000');
      // Not asked again every few seconds (it would be refused again): once a minute at most, or for another range.
      await page.waitForTimeout(6_000);
      expect(refused).toBe(1);

      // The next range is asked for and answered (a refused request used to stop the charts' polling for good).
      const from = addDays(today, -1);
      await page.fill('[data-testid="range-from"]', from);
      const cur = await api(`/v1/series?entity=store&metrics=ViewCount&from=${from}&to=${today}&granularity=day`);
      await waitForText('[data-testid="days-total"]', shown('ViewCount', cur.totals.ViewCount));
      await page.waitForSelector('[data-testid="history-error"][hidden]', { state: 'attached' });
      expect(refused).toBe(1);
    } finally {
      await page.unroute(isRefused);
    }
    await page.selectOption('[data-testid="range-preset"]', 'last30d');
    await waitForText('[data-testid="days-title"]', 'Last 30 days');
  });

  it('answers a range across years picked again while its answer is on its way, its years shown', async () => {
    const today: Day = (await api('/v1/store')).today;
    // More than a year: the range and the one it is compared with each cross a new year.
    const from = addDays(today, -400);
    const c = comparisonWindow({ from, to: today });
    const isRange = (url: URL) => url.pathname === '/v1/series' && url.searchParams.get('from') === from;
    await page.route(isRange, async (route) => {
      await new Promise((r) => setTimeout(r, 1_500));
      await route.continue();
    });
    try {
      await page.click('.tab[data-metric="ViewCount"]');
      await page.fill('[data-testid="range-from"]', from);
      // The same day again (a `change` that keeps the value) while the answer is late: it is still this range's.
      await page.dispatchEvent('[data-testid="range-from"]', 'change');
      const cur = await api(`/v1/series?entity=store&metrics=ViewCount&from=${from}&to=${today}&granularity=day`);
      await waitForText('[data-testid="days-total"]', shown('ViewCount', cur.totals.ViewCount), 15_000);
    } finally {
      await page.unroute(isRange);
    }
    expect(await page.textContent('[data-testid="range-comparison-days"]')).toBe(shownRange(c.from, c.to));
    expect(await page.textContent('[data-testid="days-summary"]')).toContain(` ${shownRange(from, today)} (today so far) · `);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-range-years.png') });
    await page.selectOption('[data-testid="range-preset"]', 'last30d');
    await waitForText('[data-testid="days-title"]', 'Last 30 days');
  });

  it('keeps every chart readable at 375 px wide', async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    try {
      const layout = () =>
        page.evaluate(() => ({
          scrollWidth: document.documentElement.scrollWidth,
          charts: [...document.querySelectorAll<HTMLElement>('.chart')].map((c) => {
            const box = c.getBoundingClientRect();
            const canvas = c.querySelector('canvas')?.getBoundingClientRect();
            return {
              testid: c.dataset['testid'],
              left: box.left,
              right: box.right,
              canvasLeft: canvas?.left ?? -1,
              canvasRight: canvas?.right ?? 1e9,
              canvasWidth: canvas?.width ?? 0,
            };
          }),
        }));
      // The charts follow their boxes (ResizeObserver) within a frame or two; a chart whose range is still loading (the
      // last test picked one) has no size yet.
      const fits = await waitFor(
        async () => {
          const l = await layout();
          if (
            l.charts.length !== 2 ||
            l.charts.some((c) => c.canvasWidth === 0 || c.canvasRight > c.right + 0.5 || c.canvasLeft < c.left - 0.5)
          )
            throw new Error(JSON.stringify(l));
          return l;
        },
        { timeoutMs: 10_000, intervalMs: 100, message: 'the charts to fit 375 px' },
      );
      expect(fits.scrollWidth).toBeLessThanOrEqual(375);
      for (const c of fits.charts) {
        expect(c.left).toBeGreaterThanOrEqual(0);
        expect(c.right).toBeLessThanOrEqual(375);
        expect(c.canvasWidth).toBeGreaterThanOrEqual(280);
      }
      // The numbers are the same at any width.
      await expectCardsToMatch((await apiTodayIs('store', { ViewCount: 6, OrderCount: 3, Revenue: '50' })).totals);
      await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-375.png'), fullPage: true });
    } finally {
      // Also when it failed: the tests after it measure at 1280 px.
      await page.setViewportSize({ width: 1280, height: 900 });
    }
  });

  it("opens a product's own page with its 30-day series", async () => {
    await page.click('[data-testid="top-ViewCount"] a[data-product="P1"]');
    await page.waitForSelector('[data-testid="product-title"]');
    expect(new URL(page.url()).hash).toBe('#/product/P1');
    expect(await page.textContent('[data-testid="product-title"]')).toBe('Product P1');

    const today = await apiTodayIs('product:P1', { ViewCount: 5, OrderCount: 2, Revenue: '30.01' });
    await expectCardsToMatch(today.totals);
    await page.click('.tab[data-metric="ViewCount"]');
    const last30 = await api('/v1/series?entity=product%3AP1&metrics=ViewCount&range=last30d&granularity=day');
    await waitForText('[data-testid="days-total"]', formatMetric(last30.totals.ViewCount, 0, LOCALE));
    expect(last30.totals.ViewCount).toBe(5);

    // The metric switch redraws the charts for orders.
    await page.click('.tab[data-metric="OrderCount"]');
    await waitForText('[data-testid="days-total"]', '2');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-product.png'), fullPage: true });

    await page.click('a.back');
    await page.waitForSelector('[data-testid="top-ViewCount"]');
  });

  it('says "Tally is not reachable; retrying" while the query API is down, and recovers by itself', async () => {
    await page.waitForSelector('[data-testid="today-ViewCount"][data-value="6"]');
    await queryApi.kill('SIGKILL');
    await page.waitForSelector('[data-testid="banner"]:not([hidden])', { timeout: 20_000 });
    expect(await page.textContent('[data-testid="banner"]')).toMatch(/^Tally is not reachable; retrying\./);
    // The last numbers stay on screen meanwhile.
    expect((await card('ViewCount')).raw).toBe('6');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-unreachable.png') });

    await queryApi.restart();
    await page.waitForSelector('[data-testid="banner"][hidden]', { state: 'attached', timeout: 30_000 });
    await page.waitForFunction(
      () => /^updated (just now|\d s ago)$/.test(document.querySelector('[data-testid="freshness"]')?.textContent ?? ''),
      undefined,
      {
        timeout: 15_000,
      },
    );
  });

  it('signs out, and refuses a key that is not a read key of the store', async () => {
    await page.click('button.sign-out');
    await page.waitForSelector('[data-testid="sign-in"]');
    expect(await page.evaluate(() => localStorage.getItem('tally.readKey'))).toBeNull();

    await signIn('tly_thisKeyWasNeverIssuedByTallyAtAll0000000');
    await waitForText('[data-testid="sign-in-message"]', 'This key was not accepted. Check that it is a read key of your store.');
    // A real key, but an ingest key: not a read key either.
    await signIn(ingestKey);
    await waitForText(
      '[data-testid="sign-in-message"]',
      'This key was not accepted: it is a key of your store, but not a read key. Sign in with a read key.',
    );
    expect(await page.evaluate(() => localStorage.getItem('tally.readKey'))).toBeNull();

    // And after a reload, a remembered key signs in by itself.
    await signIn(readKey);
    await page.waitForSelector('[data-testid="today-ViewCount"][data-value="6"]');
    await page.reload();
    await page.waitForSelector('[data-testid="today-ViewCount"][data-value="6"]', { timeout: 15_000 });
    expect(pageErrors).toEqual([]);
  });

  it('shows a sum of trillions whole inside its card, on one line at 1280 px and without overflow at 375 px', async () => {
    // Three orders at the largest value an event may carry: a 21-character amount.
    await sendEvents([order(999_999_999_999.99, 'V8'), order(999_999_999_999.99, 'V8'), order(999_999_999_999.99, 'V8')]);
    const today = await apiTodayIs('store', { ViewCount: 6, OrderCount: 6, Revenue: '3000000000049.97' });
    await expectCardsToMatch(today.totals);
    expect((await card('Revenue')).text).toBe('€3,000,000,000,049.97');

    const revenueBox = () =>
      page.evaluate(() => {
        const value = document.querySelector<HTMLElement>('[data-testid="today-Revenue"]')!;
        const card = value.closest('.card')!.getBoundingClientRect();
        const range = document.createRange();
        range.selectNodeContents(value);
        const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
        const text = range.getBoundingClientRect();
        return { lines, inside: text.left >= card.left && text.right <= card.right, overflow: value.scrollWidth > value.clientWidth };
      });
    expect(await revenueBox()).toEqual({ lines: 1, inside: true, overflow: false });
    await page.setViewportSize({ width: 375, height: 812 });
    await waitFor(async () => (await revenueBox()).inside, {
      timeoutMs: 5_000,
      intervalMs: 100,
      message: 'the revenue card to fit 375 px',
    });
    expect(await revenueBox()).toMatchObject({ inside: true, overflow: false });
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-large-sum-375.png') });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('marks unique visitors as an estimate once a day has more than 300 of them, as the API says', async () => {
    expect((await card('UniqueVisitors')).text).not.toMatch(/^\u2248/);
    const before = await api(`/v1/series?entity=store&metrics=UniqueVisitors&range=today&granularity=day`);
    expect(before.estimated).toEqual([]);
    await sendEvents(Array.from({ length: 301 }, (_, i) => view('P3', `U${i}`)));
    const today = await waitFor(
      async () => {
        const s = await api(`/v1/series?entity=store&metrics=UniqueVisitors&range=today&granularity=day`);
        if (!s.estimated.includes('UniqueVisitors')) throw new Error(`the API answers ${JSON.stringify(s)}`);
        return s;
      },
      { timeoutMs: 20_000, intervalMs: 200, message: 'the API to call today’s unique visitors an estimate' },
    );
    const want = `\u2248\u202f${shown('UniqueVisitors', today.totals.UniqueVisitors)}`;
    await waitForText('[data-testid="today-UniqueVisitors"]', want);
    expect(await page.getAttribute('[data-testid="today-UniqueVisitors"]', 'title')).toMatch(/^An estimate: .*HyperLogLog/);
    // So is the range's figure of the unique visitors' chart (the API's own total for the 30 days, today's included).
    await page.click('.tab[data-metric="UniqueVisitors"]');
    await waitFor(async () => /^\u2248\u202f[\d,]+$/.test((await page.textContent('[data-testid="days-total"]')) ?? ''), {
      timeoutMs: 20_000,
      intervalMs: 200,
      message: 'the 30-day unique visitors marked as an estimate',
    });
    // Point by point: this month's figure and the newest points of both charts' legends are estimates; the periods
    // they are compared with are not (the API marks each point).
    const months = await api(`/v1/series?entity=store&metrics=UniqueVisitors&range=last12m&granularity=month`);
    expect(months.points.map((p: { estimated?: string[] }) => p.estimated ?? []).at(-1)).toEqual(['UniqueVisitors']);
    expect(months.points.slice(0, -1).every((p: { estimated?: string[] }) => p.estimated === undefined)).toBe(true);
    await waitFor(async () => /^\u2248\u202f[\d,]+$/.test((await page.textContent('[data-testid="month-total"]')) ?? ''), {
      timeoutMs: 20_000,
      intervalMs: 200,
      message: "this month's unique visitors marked as an estimate",
    });
    expect(await page.getAttribute('[data-testid="month-total"]', 'title')).toMatch(/^An estimate: /);
    expect(await page.textContent('[data-testid="month-previous-total"]')).toMatch(/^[\d,]+$/);
    expect(await page.getAttribute('[data-testid="month-previous-total"]', 'title')).toBeNull();
    for (const chart of ['chart-days', 'chart-months']) {
      const legend = await page.$$eval(`[data-testid="${chart}"] .u-legend .u-value`, (els) => els.map((e) => e.textContent ?? ''));
      expect(legend[1], chart).toMatch(/^\u2248\u202f[\d,]+$/);
      expect(legend[2], chart).toMatch(/^[\d,]+( \(.*\))?$/);
    }
    // The 12-month CSV says which of its values are estimates: this month's unique visitors, not the year before's.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="csv-months"]')]);
    const [header, ...lines] = readFileSync((await download.path())!, 'utf8').split('\r\n');
    const cells = header!.split(',');
    const row = lines.find((l) => l.startsWith(`${months.points.at(-1).period},`))!.split(',');
    expect([row[cells.indexOf('UniqueVisitors_estimate')], row[cells.indexOf('compared_UniqueVisitors_estimate')]]).toEqual([
      'true',
      'false',
    ]);
    // Within 3 standard errors (0.81%) of the exact count before plus the 301 new visitors.
    const exact = before.totals.UniqueVisitors + 301;
    expect(Math.abs(today.totals.UniqueVisitors - exact)).toBeLessThanOrEqual(Math.ceil(3 * 0.0081 * exact));
    expect(pageErrors).toEqual([]);
  });

  it('keeps a 128-character product id within 375 px, in the top lists and on its page', async () => {
    const long = 'A'.repeat(128);
    await sendEvents([view(long, 'V9')]);
    await page.setViewportSize({ width: 375, height: 812 });
    try {
      const link = page.locator(`[data-testid="top-ViewCount"] a[data-product="${long}"]`);
      await link.waitFor({ timeout: 20_000 });
      // Each id wraps in its own column, left of its value, and each value stays in its row.
      const rows = await page.$$eval('[data-testid="top-ViewCount"] li', (lis) =>
        lis.map((li) => {
          const [row, key, value] = [li, li.querySelector('a')!, li.querySelector('.top-value')!].map((e) => e.getBoundingClientRect());
          return {
            apart: key!.right <= value!.left,
            inRow: value!.top >= row!.top && value!.bottom <= row!.bottom && value!.right <= row!.right,
          };
        }),
      );
      expect(rows.length).toBeGreaterThan(1);
      expect(rows.filter((r) => !r.apart || !r.inRow)).toEqual([]);
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
      await page.locator('[data-testid="top-products"]').screenshot({ path: path.join(SCREENSHOTS, 'dashboard-long-id-top-375.png') });

      await link.click();
      await waitForText('[data-testid="product-title"]', `Product ${long}`);
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
      await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-long-id-375.png') });
    } finally {
      await page.setViewportSize({ width: 1280, height: 900 });
    }
  });

  it('paces itself under a low query rate limit from its first answer: never refused, no banner until the budget is taken', async () => {
    // 2 requests a second: fewer than the page asks at once (today, the charts' 4 series, the top lists).
    await queryApi.restart({ QUERY_RATE_LIMIT_PER_SECOND: '2', QUERY_RATE_WINDOW_SECONDS: '1' });
    // Every text the banner shows, however briefly, from the page's first script on.
    const recorder = await page.addInitScript(() => {
      const seen: string[] = [];
      (window as unknown as { bannerSeen: string[] }).bannerSeen = seen;
      new MutationObserver(() => {
        const banner = document.querySelector<HTMLElement>('[data-testid="banner"]');
        const text = banner && !banner.hidden ? (banner.textContent ?? '') : undefined;
        if (text && seen.at(-1) !== text) seen.push(text);
      }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    });
    const bannerSeen = () => page.evaluate(() => (window as unknown as { bannerSeen: string[] }).bannerSeen);
    // The requests the API refused.
    const refused: string[] = [];
    const onResponse = (res: PageResponse) => {
      if (res.status() === 429) refused.push(res.url());
    };
    try {
      // A new page on the overview (the one before gone first): its first request (/v1/store, alone) tells it the
      // limit (X-RateLimit-*), before its pollers start together.
      await page.goto('about:blank');
      page.on('response', onResponse);
      await page.goto(`${queryApi.url}/#/`);
      await page.waitForSelector('[data-testid="store-name"]', { timeout: 20_000 });
      // Every request is answered: the cards, the charts (4 requests sent together), yesterday, the three top lists.
      for (const m of METRICS) await page.waitForSelector(`[data-testid="today-${m}"][data-value]`, { timeout: 30_000 });
      await page.waitForSelector('[data-testid="days-total"]', { timeout: 30_000 });
      await page.waitForSelector('[data-testid="month-total"]', { timeout: 30_000 });
      await waitForText('[data-testid="yesterday-ViewCount"]', 'Yesterday (full day): 0');
      for (const list of ['top-ViewCount', 'top-OrderCount', 'top-page-PageViews']) {
        await page.waitForSelector(`[data-testid="${list}"] ol`, { timeout: 30_000 });
      }
      // Today moves live, and the top lists follow (the refresh on a change asks the charts and lists again at once).
      const views = Number((await card('ViewCount')).raw);
      const p1 = async () => (await topList('ViewCount')).find((i) => i.id === 'P1')?.value;
      const p1Before = await p1();
      await sendEvents([view('P1', 'V30'), view('P1', 'V30')]);
      await page.waitForSelector(`[data-testid="today-ViewCount"][data-value="${views + 2}"]`, { timeout: 20_000 });
      await waitFor(async () => (await p1()) === shown('ViewCount', Number(p1Before!.replaceAll(',', '')) + 2), {
        timeoutMs: 30_000,
        intervalMs: 200,
        message: "P1's views in the top list to move by 2",
      });
      // Waited for in turn, never refused: the banner never showed, and no request got a 429.
      expect(await bannerSeen()).toEqual([]);
      page.off('response', onResponse);
      expect(refused).toEqual([]);

      // Another client of the store takes its whole budget: the page's requests are refused for longer than their
      // refresh, and the banner says so (not that Tally is down), then goes once the budget is back.
      let hogging = true;
      const hog = (async () => {
        for (const until = Date.now() + 30_000; hogging && Date.now() < until;) {
          await (await fetch(`${queryApi.url}/v1/store`, { headers: { authorization: `Bearer ${readKey}` } })).arrayBuffer();
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })();
      try {
        await page.waitForFunction(
          () => {
            const banner = document.querySelector<HTMLElement>('[data-testid="banner"]');
            return !banner?.hidden && /^Too many requests for this store right now/.test(banner?.textContent ?? '');
          },
          undefined,
          { timeout: 30_000 },
        );
        const banner = (await page.textContent('[data-testid="banner"]'))!;
        expect(banner).toMatch(
          /^Too many requests for this store right now \(Tally allows it 2 a second, over all its keys and open pages\); retrying( in \d+ s)?\./,
        );
        expect(banner).not.toMatch(/not reachable/);
        await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-rate-limited.png') });
      } finally {
        hogging = false;
        await hog;
      }
      await page.waitForSelector('[data-testid="banner"][hidden]', { state: 'attached', timeout: 30_000 });
      expect(pageErrors).toEqual([]);
    } finally {
      page.off('response', onResponse);
      await recorder.dispose();
      await queryApi.restart({ QUERY_RATE_LIMIT_PER_SECOND: '0' });
    }
    // Two restarts of the query API, the page loading at 2 requests a second, a refresh, and the budget taken.
  }, 180_000);
});
