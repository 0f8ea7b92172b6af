// One entity's page — the whole store, or one product: today's numbers live (polled every 2.5 s), the last 30 days
// and the last 12 months against the periods before them (refreshed every minute, today's point patched live).
import type { Series, SeriesPoint } from './api';
import { ComparisonChart } from './chart';
import type { View, ViewContext } from './context';
import { h, replaceChildren, setText } from './dom';
import { RequestError } from './errors';
import { formatDayLong, formatMetric, formatMonth, percentChange, toNumber } from './format';
import { startPoller, throttle, type Poller } from './live';
import type { ShownMetric } from './metrics';
import { addDays, addMonths, dashboardWindows, listDays, listMonths, monthOf, type Day } from './periods';
import { compare, isEmpty, totalOf, withToday, type Compared } from './series';

const LIVE_INTERVAL_MS = 2_500;
const HISTORY_INTERVAL_MS = 60_000;
/** When today's numbers move, the history (and the top lists) are asked again, at most this often. */
const REFRESH_ON_CHANGE_MS = 10_000;
/** Failed requests are retried after 2.5 s, then 5 s, then every 10 s, whatever their usual interval. */
export const RETRY_MS = 2_500;
export const MAX_BACKOFF_MS = 10_000;

export interface EntityViewOptions {
  /** `store` or `product:P1`. */
  entity: string;
  metrics: ShownMetric[];
  /** Extra sections below the charts (the top products of the store). */
  extra?: HTMLElement[];
  /** Today's numbers changed (throttled to REFRESH_ON_CHANGE_MS): the extra sections may refresh too. */
  onChange?: () => void;
}

export function mountEntityView(root: HTMLElement, ctx: ViewContext, opts: EntityViewOptions): View {
  const { api, locale } = ctx;
  if (opts.metrics.length === 0) {
    replaceChildren(root, h('p', { class: 'empty' }, "This store's rules count none of the metrics this dashboard shows (product views, orders, revenue, page views)."));
    return { destroy() {} };
  }
  const names = opts.metrics.map((m) => m.name);
  const source = (what: string) => `${opts.entity}:${what}`;

  let todayDate: Day = ctx.store.info.today;
  let live: { series: Series; point: SeriesPoint } | undefined;
  let history: { days: Compared; months: Compared; asOf: string } | undefined;
  let selected = opts.metrics[0]!;

  // ---- today ----
  const todayLabel = h('span', { class: 'section-note', 'data-testid': 'today-date' });
  const todayError = h('p', { class: 'inline-error', role: 'alert', hidden: true });
  const cards = opts.metrics.map((m) => {
    const value = h('p', { class: 'card-value', 'data-testid': `today-${m.name}` }, '…');
    const yesterday = h('p', { class: 'card-sub', 'data-testid': `yesterday-${m.name}` }, '\u00a0');
    const card = h('article', { class: 'card', 'data-metric': m.name }, h('h3', { class: 'card-label' }, m.label), value, yesterday);
    return { metric: m, card, value, yesterday };
  });
  const todaySection = h(
    'section',
    { class: 'today', 'aria-labelledby': 'today-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'today-title' }, 'Today so far'), todayLabel),
    h('div', { class: 'cards' }, ...cards.map((c) => c.card)),
    todayError,
  );

  // ---- trends ----
  const tabs = opts.metrics.map((m) =>
    h('button', { type: 'button', class: 'tab', 'data-metric': m.name, 'aria-pressed': String(m === selected), onclick: () => select(m) }, m.label),
  );
  const daysSummary = h('p', { class: 'summary', 'data-testid': 'days-summary' });
  const monthsSummary = h('p', { class: 'summary', 'data-testid': 'months-summary' });
  const daysEmpty = h('p', { class: 'empty', hidden: true });
  const monthsEmpty = h('p', { class: 'empty', hidden: true });
  const daysChartBox = h('div', { class: 'chart', 'data-testid': 'chart-days' });
  const monthsChartBox = h('div', { class: 'chart', 'data-testid': 'chart-months' });
  const historyError = h('p', { class: 'inline-error', role: 'alert', hidden: true });
  const trendsSection = h(
    'section',
    { class: 'trends', 'aria-labelledby': 'trends-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'trends-title' }, 'Trends'), h('div', { class: 'tabs', role: 'group', 'aria-label': 'Metric' }, ...tabs)),
    historyError,
    h('div', { class: 'panel' }, h('h3', {}, 'Last 30 days'), daysSummary, daysEmpty, daysChartBox),
    h('div', { class: 'panel' }, h('h3', {}, 'Last 12 months'), monthsSummary, monthsEmpty, monthsChartBox),
  );

  replaceChildren(root, todaySection, trendsSection, ...(opts.extra ?? []));

  const daysChart = new ComparisonChart(daysChartBox, { kind: 'day', currentLabel: 'Last 30 days', previousLabel: 'Previous 30 days', locale });
  const monthsChart = new ComparisonChart(monthsChartBox, {
    kind: 'month',
    currentLabel: 'Last 12 months',
    previousLabel: 'A year earlier',
    locale,
  });

  function select(m: ShownMetric): void {
    selected = m;
    for (const t of tabs) t.setAttribute('aria-pressed', String(t.dataset['metric'] === m.name));
    renderHistory();
  }

  const fmt = (m: ShownMetric, v: SeriesPoint['values'][string] | undefined) => (v === undefined ? '–' : formatMetric(v, m.scale, locale));

  /** The 30 days with today's point from the live answer when that is newer than the history answer. */
  function daysWithToday(): Compared | undefined {
    if (!history) return undefined;
    if (live && live.point.period === todayDate && live.series.asOf >= history.asOf) return withToday(history.days, live.point);
    return history.days;
  }

  function renderToday(): void {
    setText(todayLabel, formatDayLong(todayDate, locale));
    const days = daysWithToday();
    const yesterdayIdx = days ? days.periods.indexOf(addDays(todayDate, -1)) : -1;
    for (const c of cards) {
      const value = live?.series.totals[c.metric.name] ?? live?.point.values[c.metric.name];
      if (live) {
        setText(c.value, fmt(c.metric, value ?? 0));
        c.value.dataset['value'] = String(value ?? 0);
        c.card.classList.toggle('is-zero', toNumber(value) === 0);
      }
      if (days && yesterdayIdx >= 0) {
        // Without hourly data the API cannot say what yesterday had at this time of day: show the full day, and say so.
        setText(c.yesterday, `Yesterday (full day): ${fmt(c.metric, days.current[yesterdayIdx]!.values[c.metric.name] ?? 0)}`);
      }
    }
  }

  function renderHistory(): void {
    const days = daysWithToday();
    if (!days || !history) return;
    const m = selected;
    const cur = totalOf(days.current, m.name, m.scale);
    const prev = totalOf(days.previous, m.name, m.scale);
    const change = percentChange(toNumber(cur), toNumber(prev), locale);
    replaceChildren(
      daysSummary,
      h('strong', { 'data-testid': 'days-total' }, fmt(m, cur)),
      ` ${m.noun} in the last 30 days (today so far) · `,
      h('strong', {}, fmt(m, prev)),
      ' in the 30 days before ',
      h('span', { class: `change change-${change.direction}` }, change.text),
    );
    const daysBlank = isEmpty(days, m.name);
    daysEmpty.hidden = !daysBlank;
    daysChartBox.hidden = daysBlank;
    setText(daysEmpty, `No ${m.noun} in the last 60 days yet.`);
    if (!daysBlank) daysChart.show(days, m.name, m.scale);

    const months = history.months;
    const thisMonth = monthOf(todayDate);
    const idx = months.periods.indexOf(thisMonth);
    const monthNow = idx >= 0 ? months.current[idx]!.values[m.name] : undefined;
    const monthBefore = idx >= 0 ? months.previous[idx]!.values[m.name] : undefined;
    replaceChildren(
      monthsSummary,
      `${formatMonth(thisMonth, locale)} so far: `,
      h('strong', { 'data-testid': 'month-total' }, fmt(m, monthNow ?? 0)),
      ` ${m.noun} · ${formatMonth(addMonths(thisMonth, -12), locale)} (full month): `,
      h('strong', {}, fmt(m, monthBefore ?? 0)),
    );
    const monthsBlank = isEmpty(months, m.name);
    monthsEmpty.hidden = !monthsBlank;
    monthsChartBox.hidden = monthsBlank;
    setText(monthsEmpty, `No ${m.noun} in the last 24 months yet.`);
    if (!monthsBlank) monthsChart.show(months, m.name, m.scale);
  }

  function showError(el: HTMLElement, err: unknown): void {
    if (err instanceof RequestError) {
      el.hidden = false;
      setText(el, `Tally could not answer: ${err.message}`);
    }
  }

  const pollers: Poller[] = [];
  const historyPoller = startPoller({
    intervalMs: HISTORY_INTERVAL_MS,
    retryMs: RETRY_MS,
    maxBackoffMs: MAX_BACKOFF_MS,
    run: async () => {
      if (document.hidden && history) return;
      const w = dashboardWindows(todayDate);
      const [days, months] = await Promise.all([
        api.series({ entity: opts.entity, metrics: names, granularity: 'day', from: w.daysRequest.from, to: w.daysRequest.to }),
        api.series({ entity: opts.entity, metrics: names, granularity: 'month', from: w.monthsRequest.from, to: w.monthsRequest.to }),
      ]);
      history = {
        days: compare(days.points, listDays(w.days.from, w.days.to), listDays(w.previousDays.from, w.previousDays.to), names),
        months: compare(months.points, listMonths(w.months.from, w.months.to), listMonths(w.previousMonths.from, w.previousMonths.to), names),
        asOf: days.asOf < months.asOf ? days.asOf : months.asOf,
      };
      historyError.hidden = true;
      renderHistory();
      renderToday();
    },
    onSuccess: () => ctx.status.ok(source('history')),
    onError: (err) => {
      showError(historyError, err);
      return ctx.status.failed(source('history'), err);
    },
  });
  pollers.push(historyPoller);

  // The 30-day chart gets today's point from every live answer; the month totals and the top lists cannot be
  // patched exactly, so they are asked again soon after today's numbers move rather than once a minute only.
  const refreshOnChange = throttle(() => {
    historyPoller.poke();
    opts.onChange?.();
  }, REFRESH_ON_CHANGE_MS);
  const sameValues = (a: SeriesPoint['values'], b: SeriesPoint['values']) => names.every((n) => String(a[n]) === String(b[n]));

  const livePoller = startPoller({
    intervalMs: LIVE_INTERVAL_MS,
    maxBackoffMs: MAX_BACKOFF_MS,
    run: async () => {
      // Nobody is looking: no requests until the tab is shown again (then at once, below).
      if (document.hidden) return;
      const series = await api.series({ entity: opts.entity, metrics: names, granularity: 'day', range: 'today' });
      const point = series.points.find((p) => p.period === series.to) ?? { period: series.to, values: series.totals };
      if (series.to !== todayDate) {
        // Midnight in the store's time zone: the windows move, so the history is asked again at once.
        todayDate = series.to;
        historyPoller.poke();
      }
      const changed = live !== undefined && live.point.period === point.period && !sameValues(live.point.values, point.values);
      live = { series, point };
      if (changed) refreshOnChange();
      todayError.hidden = true;
      ctx.status.fresh(series.asOf);
      renderToday();
      renderHistory();
    },
    onSuccess: () => ctx.status.ok(source('live')),
    onError: (err) => {
      showError(todayError, err);
      return ctx.status.failed(source('live'), err);
    },
  });
  pollers.push(livePoller);
  const onVisibility = () => {
    if (document.hidden) return;
    livePoller.poke();
    refreshOnChange();
  };
  document.addEventListener('visibilitychange', onVisibility);

  renderToday();
  return {
    destroy() {
      for (const p of pollers) p.stop();
      document.removeEventListener('visibilitychange', onVisibility);
      refreshOnChange.cancel();
      daysChart.destroy();
      monthsChart.destroy();
    },
  };
}
