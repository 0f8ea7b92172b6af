// One entity's page — the whole store, or one product: today's numbers live (polled every 2.5 s), a picked range
// of days (last 30 by default) against the period just before it, and the last 12 months against a year earlier
// (refreshed every minute, today's point patched live). Each chart's data downloads as CSV.
import type { RequestOptions, SeriesQuery, Series, SeriesPoint } from './api';
import { ComparisonChart, type ComparisonChartOptions } from './chart';
import { pollView, type View, type ViewContext } from './context';
import { chartCsv, downloadCsv } from './csv';
import { h, replaceChildren, setText } from './dom';
import type { RequestError } from './errors';
import { formatDayLong, formatDayRange, formatMetric, formatMonth, percentChange, toNumber, type MetricValue } from './format';
import { allOrAbort, throttle } from './live';
import { nounAfter, type ShownMetric } from './metrics';
import {
  addMonths,
  checkPicked,
  comparisonWindow,
  dashboardWindows,
  listDays,
  listMonths,
  monthOf,
  presetWindow,
  RANGE_PRESETS,
  sameWindow,
  type DateWindow,
  type Day,
  type RangePreset,
} from './periods';
import { compare, ESTIMATE_MARK, ESTIMATE_TITLE, isEmpty, isEstimate, totalOf, withToday, type Compared } from './series';

const LIVE_INTERVAL_MS = 2_500;
const HISTORY_INTERVAL_MS = 60_000;
/** When today's numbers move, the history (and the top lists) are asked again, at most this often. */
const REFRESH_ON_CHANGE_MS = 10_000;

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
    const none = "This store's rules count none of the metrics this dashboard shows (product views, orders, revenue, page views).";
    replaceChildren(root, h('p', { class: 'empty' }, none));
    return { destroy() {} };
  }
  // Only what the API counts is asked for (unique visitors say "—" until it counts them).
  const names = opts.metrics.filter((m) => m.counted).map((m) => m.name);

  let todayDate: Day = ctx.store.info.today;
  let preset: RangePreset = 'last30d';
  let range: DateWindow = presetWindow('last30d', todayDate);
  let live: { series: Series; point: SeriesPoint } | undefined;
  /** The range and its comparison (two answers, so each has the API's own totals), the months, yesterday. */
  let history:
    { range: DateWindow; days: Compared; current: Series; previous: Series; months: Compared; yesterday: Series; asOf: string } | undefined;
  let selected = opts.metrics.find((m) => m.counted) ?? opts.metrics[0]!;

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
    h(
      'button',
      { type: 'button', class: 'tab', 'data-metric': m.name, 'aria-pressed': String(m === selected), onclick: () => select(m) },
      m.label,
    ),
  );
  // The range picker: a preset or any from/to, and beside it the period the range is compared with.
  const presetSelect = h(
    'select',
    { 'data-testid': 'range-preset', 'aria-label': 'Range', onchange: () => pickPreset(presetSelect.value as RangePreset) },
    ...RANGE_PRESETS.map((p) => h('option', { value: p.id, selected: p.id === preset }, p.label)),
  );
  const fromInput = h('input', { type: 'date', 'data-testid': 'range-from', 'aria-label': 'From', onchange: () => pickDays() });
  const toInput = h('input', { type: 'date', 'data-testid': 'range-to', 'aria-label': 'To', onchange: () => pickDays() });
  const comparisonNote = h('span', { class: 'comparison', 'data-testid': 'range-comparison' });
  const rangeError = h('p', { class: 'inline-error', role: 'alert', 'data-testid': 'range-error', hidden: true });
  const rangeBar = h(
    'div',
    { class: 'range-bar', 'data-testid': 'range-picker' },
    presetSelect,
    h('span', { class: 'range-days' }, fromInput, h('span', { class: 'range-dash' }, '–'), toInput),
    comparisonNote,
  );
  const daysTitle = h('h3', { 'data-testid': 'days-title' });
  const historyError = h('p', { class: 'inline-error', role: 'alert', 'data-testid': 'history-error', hidden: true });
  /** A chart panel: title, CSV button, summary, the note shown instead of an empty chart, the chart. */
  const chartPanel = (which: 'days' | 'months', title: HTMLElement, chart: Omit<ComparisonChartOptions, 'locale'>) => {
    const csv = h('button', { type: 'button', class: 'csv', 'data-testid': `csv-${which}`, onclick: () => exportCsv(which) }, 'CSV');
    const summary = h('p', { class: 'summary', 'data-testid': `${which}-summary` });
    const empty = h('p', { class: 'empty', hidden: true });
    const box = h('div', { class: 'chart', 'data-testid': `chart-${which}` });
    const element = h('div', { class: 'panel' }, h('div', { class: 'panel-head' }, title, csv), summary, empty, box);
    const plot = new ComparisonChart(box, { ...chart, locale });
    /** Draws `m` of `data`, or says `emptyText` instead when there is nothing to draw. */
    const show = (m: ShownMetric, data: Compared | undefined, emptyText: string) => {
      const blank = !data || isEmpty(data, m.name);
      empty.hidden = !blank;
      box.hidden = blank;
      setText(empty, emptyText);
      if (!blank) plot.show(data, m.name, m.scale, m.currency);
    };
    return { element, summary, box, show, destroy: () => plot.destroy() };
  };
  const dayPanel = chartPanel('days', daysTitle, { kind: 'day', currentLabel: 'This period', previousLabel: 'Compared period' });
  const monthPanel = chartPanel('months', h('h3', {}, 'Last 12 months'), {
    kind: 'month',
    currentLabel: 'Last 12 months',
    previousLabel: 'A year earlier',
  });
  const trendsSection = h(
    'section',
    { class: 'trends', 'aria-labelledby': 'trends-title' },
    h(
      'div',
      { class: 'section-head' },
      h('h2', { id: 'trends-title' }, 'Trends'),
      h('div', { class: 'tabs', role: 'group', 'aria-label': 'Metric' }, ...tabs),
    ),
    historyError,
    rangeBar,
    rangeError,
    dayPanel.element,
    monthPanel.element,
  );

  replaceChildren(root, todaySection, trendsSection, ...(opts.extra ?? []));

  function select(m: ShownMetric): void {
    selected = m;
    for (const t of tabs) t.setAttribute('aria-pressed', String(t.dataset['metric'] === m.name));
    renderHistory();
  }

  /** A value as shown: '—' when the API does not answer the metric (unique visitors before it counts them). */
  const fmt = (m: ShownMetric, v: MetricValue | undefined) => (v === undefined ? '\u2014' : formatMetric(v, m.scale, locale, m.currency));
  const span = (w: DateWindow) => formatDayRange(w.from, w.to, locale);

  function renderRangeBar(): void {
    presetSelect.value = preset;
    fromInput.value = range.from;
    toInput.value = range.to;
    fromInput.max = todayDate;
    toInput.max = todayDate;
    const c = comparisonWindow(range);
    replaceChildren(comparisonNote, 'compared with ', h('strong', { 'data-testid': 'range-comparison-days' }, span(c)));
    comparisonNote.dataset['from'] = c.from;
    comparisonNote.dataset['to'] = c.to;
  }

  function setRange(next: DateWindow): void {
    rangeError.hidden = true;
    // The same days (another preset, an input changed back): the answer on its way, or shown, is still theirs.
    if (sameWindow(next, range)) {
      renderRangeBar();
      renderHistory();
      return;
    }
    range = next;
    renderRangeBar();
    // The old range's numbers must not stand under the new range's title while its answer is on its way.
    history = undefined;
    dayPanel.box.hidden = true;
    replaceChildren(dayPanel.summary, 'Loading…');
    historyPoller.poke();
  }

  function pickPreset(p: RangePreset): void {
    preset = p;
    if (p === 'custom') {
      renderRangeBar();
      fromInput.focus();
      return;
    }
    setRange(presetWindow(p, todayDate));
  }

  function pickDays(): void {
    const picked = checkPicked(fromInput.value, toInput.value, todayDate);
    if (typeof picked === 'string') {
      rangeError.hidden = false;
      setText(rangeError, picked);
      return;
    }
    preset = 'custom';
    setRange(picked);
  }

  function exportCsv(which: 'days' | 'months'): void {
    const data = which === 'days' ? daysWithToday() : history?.months;
    if (!data || !history) return;
    const name = opts.entity.replace(/[^A-Za-z0-9_.-]+/g, '-');
    const span =
      which === 'days' ? `${history.range.from}_${history.range.to}` : `${data.periods[0]}_${data.periods[data.periods.length - 1]}`;
    downloadCsv(chartCsv(data, opts.metrics, which === 'days' ? 'day' : 'month'), `tally-${name}-${which}-${span}.csv`);
  }

  /** The range's days with today's point from the live answer when that is newer than the history answer. */
  function daysWithToday(): Compared | undefined {
    if (!history) return undefined;
    if (live && live.point.period === todayDate && live.series.asOf >= history.asOf) return withToday(history.days, live.point);
    return history.days;
  }

  function renderToday(): void {
    setText(todayLabel, formatDayLong(todayDate, locale));
    for (const c of cards) {
      const value = c.metric.counted ? (live?.series.totals[c.metric.name] ?? live?.point.values[c.metric.name]) : undefined;
      if (live || !c.metric.counted) {
        const estimate = live?.series.estimated.includes(c.metric.name) === true;
        const text = `${estimate ? ESTIMATE_MARK : ''}${fmt(c.metric, value)}`;
        setText(c.value, text);
        c.value.title = estimate ? ESTIMATE_TITLE : '';
        // The card's font shrinks with the number's length (styles.css), so a large sum fits its card whole.
        c.value.style.setProperty('--chars', String(text.length));
        c.value.dataset['value'] = value === undefined ? '' : String(value);
        c.card.classList.toggle('is-zero', value !== undefined && toNumber(value) === 0);
      }
      if (history && c.metric.counted) {
        // Without hourly data the API cannot say what yesterday had at this time of day: show the full day, and say so.
        const estimate = history.yesterday.estimated.includes(c.metric.name) ? ESTIMATE_MARK : '';
        setText(c.yesterday, `Yesterday (full day): ${estimate}${fmt(c.metric, history.yesterday.totals[c.metric.name])}`);
      } else if (!c.metric.counted) setText(c.yesterday, 'Not counted by this Tally yet');
    }
  }

  /**
   * A range's figure: counts and sums add up day by day (so today's live point moves it at once); unique visitors
   * do not, so theirs is the API's own total for the range.
   */
  const rangeTotal = (m: ShownMetric, points: readonly SeriesPoint[], answer: Series): MetricValue | undefined =>
    m.additive ? totalOf(points, m.name, m.scale) : answer.totals[m.name];

  function renderHistory(): void {
    const days = daysWithToday();
    const m = selected;
    setText(daysTitle, preset === 'custom' ? 'Custom range' : (RANGE_PRESETS.find((p) => p.id === preset)?.label ?? ''));
    if (!m.counted) {
      for (const p of [dayPanel, monthPanel]) {
        replaceChildren(p.summary);
        p.show(m, undefined, `This Tally does not count ${m.noun} yet.`);
      }
      return;
    }
    if (!days || !history) return;
    const cur = rangeTotal(m, days.current, history.current);
    const prev = rangeTotal(m, days.previous, history.previous);
    const change = percentChange(toNumber(cur), toNumber(prev), locale);
    const compared = comparisonWindow(history.range);
    // A distinct count's range figure is the API's own, an estimate when the API says so.
    const approx = (answer: Series) => (!m.additive && answer.estimated.includes(m.name) ? ESTIMATE_MARK : '');
    replaceChildren(
      dayPanel.summary,
      h('strong', { 'data-testid': 'days-total' }, approx(history.current) + fmt(m, cur)),
      ` ${nounAfter(m, cur)} ${span(history.range)}${history.range.to === todayDate ? ' (today so far)' : ''} · `,
      h('strong', { 'data-testid': 'days-previous-total' }, approx(history.previous) + fmt(m, prev)),
      ` in ${span(compared)} `,
      h('span', { class: `change change-${change.direction}`, 'data-testid': 'days-change' }, change.text),
    );
    dayPanel.show(m, days, `No ${m.noun} in these days or the days compared yet.`);

    const months = history.months;
    const thisMonth = monthOf(todayDate);
    const idx = months.periods.indexOf(thisMonth);
    // A month's figure, marked when the API says it is an estimate (a month of unique visitors past 300 a day).
    const monthFigure = (point: SeriesPoint | undefined, testId: string) => {
      const estimate = isEstimate(point, m.name);
      const text = (estimate ? ESTIMATE_MARK : '') + fmt(m, point?.values[m.name] ?? 0);
      return h('strong', { 'data-testid': testId, title: estimate ? ESTIMATE_TITLE : undefined }, text);
    };
    const monthPoint = idx >= 0 ? months.current[idx] : undefined;
    replaceChildren(
      monthPanel.summary,
      `${formatMonth(thisMonth, locale)} so far: `,
      monthFigure(monthPoint, 'month-total'),
      ` ${nounAfter(m, monthPoint?.values[m.name])} · ${formatMonth(addMonths(thisMonth, -12), locale)} (full month): `,
      monthFigure(idx >= 0 ? months.previous[idx] : undefined, 'month-previous-total'),
    );
    monthPanel.show(m, months, `No ${m.noun} in the last 24 months yet.`);
  }

  /** A refused request says why in `errorEl`. */
  const showRefused = (errorEl: HTMLElement) => (err: RequestError) => {
    errorEl.hidden = false;
    setText(errorEl, `Tally could not answer: ${err.message}`);
  };
  /** The entity's series of the metrics counted. */
  const series = (q: Omit<SeriesQuery, 'entity' | 'metrics'>, req: RequestOptions) =>
    api.series({ entity: opts.entity, metrics: names, ...q }, req);

  const historyPoller = pollView(ctx, `${opts.entity}:history`, HISTORY_INTERVAL_MS, showRefused(historyError), async () => {
    // Skipped (not a success: it asked nothing): refreshed when the tab is shown again.
    if (document.hidden && history) return false;
    if (names.length === 0) return false;
    const w = dashboardWindows(todayDate);
    const asked = range;
    const c = comparisonWindow(asked);
    // Sent together (each in its turn under the store's request rate limit, api.ts); a refused one is asked again
    // by itself, so the answered ones are not asked again.
    const req = (signal: AbortSignal) => ({ signal, patienceMs: HISTORY_INTERVAL_MS });
    const [current, previous, months, yesterday] = await allOrAbort<[Series, Series, Series, Series]>([
      (signal) => series({ granularity: 'day', from: asked.from, to: asked.to }, req(signal)),
      (signal) => series({ granularity: 'day', from: c.from, to: c.to }, req(signal)),
      (signal) => series({ granularity: 'month', from: w.monthsRequest.from, to: w.monthsRequest.to }, req(signal)),
      (signal) => series({ granularity: 'day', range: 'yesterday' }, req(signal)),
    ]);
    // The range changed while these were asked: the poke that changed it asks again.
    if (!sameWindow(asked, range)) return;
    const asOf = [current, previous, months, yesterday].map((s) => s.asOf).sort()[0]!;
    history = {
      range: asked,
      days: compare([...current.points, ...previous.points], listDays(asked.from, asked.to), listDays(c.from, c.to), names),
      current,
      previous,
      months: compare(months.points, listMonths(w.months.from, w.months.to), listMonths(w.previousMonths.from, w.previousMonths.to), names),
      yesterday,
      asOf,
    };
    historyError.hidden = true;
    renderHistory();
    renderToday();
  });

  // The 30-day chart gets today's point from every live answer; the month totals and the top lists cannot be
  // patched exactly, so they are asked again soon after today's numbers move rather than once a minute only.
  const refreshOnChange = throttle(() => {
    historyPoller.poke();
    opts.onChange?.();
  }, REFRESH_ON_CHANGE_MS);
  const sameValues = (a: SeriesPoint['values'], b: SeriesPoint['values']) => names.every((n) => String(a[n]) === String(b[n]));

  const livePoller = pollView(ctx, `${opts.entity}:live`, LIVE_INTERVAL_MS, showRefused(todayError), async () => {
    // Nobody is looking: no requests until the tab is shown again (then at once, below). Not a success either.
    if (document.hidden || names.length === 0) return false;
    // Before the other requests waiting their turn under the store's request rate limit.
    const today = await series({ granularity: 'day', range: 'today' }, { first: true, patienceMs: LIVE_INTERVAL_MS });
    const point = today.points.find((p) => p.period === today.to) ?? { period: today.to, values: today.totals };
    if (today.to !== todayDate) {
      // Midnight in the store's time zone: the windows (and a preset range) move, so the history is asked again.
      todayDate = today.to;
      if (preset !== 'custom') range = presetWindow(preset, todayDate);
      renderRangeBar();
      historyPoller.poke();
    }
    const changed = live !== undefined && live.point.period === point.period && !sameValues(live.point.values, point.values);
    live = { series: today, point };
    if (changed) refreshOnChange();
    todayError.hidden = true;
    ctx.status.fresh(today.asOf);
    renderToday();
    renderHistory();
  });
  const onVisibility = () => {
    if (document.hidden) return;
    livePoller.poke();
    refreshOnChange();
  };
  document.addEventListener('visibilitychange', onVisibility);

  renderRangeBar();
  renderToday();
  renderHistory();
  return {
    destroy() {
      historyPoller.stop();
      livePoller.stop();
      document.removeEventListener('visibilitychange', onVisibility);
      refreshOnChange.cancel();
      dayPanel.destroy();
      monthPanel.destroy();
    },
  };
}
