// One uPlot chart: a period (solid line) against the period before it (dashed), point by point. uPlot draws;
// this file only configures it — labels, value formatting, sizing.
import uPlot from 'uplot';
import { formatCompact, formatDayWithWeekday, formatMetric, formatMonth, type Locale, type MetricValue } from './format';
import { chartData, ESTIMATE_MARK, isEstimate, niceCeil, pickTicks, pointValue, type Compared } from './series';

export interface ComparisonChartOptions {
  kind: 'day' | 'month';
  currentLabel: string;
  previousLabel: string;
  locale: Locale;
}

/** Integer steps for count axes, so 4 orders never get a tick at 0.5. */
const COUNT_INCRS = [
  1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4, 2.5e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 1e8, 1e9,
];
const CURRENT_COLOR = '#2563eb';
const PREVIOUS_COLOR = '#9aa3af';

export class ComparisonChart {
  private plot: uPlot | undefined;
  private plotted: { metric: string; scale: number; currency: string | undefined } | undefined;
  private compared: Compared | undefined;
  private readonly resize: ResizeObserver;

  constructor(
    private readonly container: HTMLElement,
    private readonly opts: ComparisonChartOptions,
  ) {
    this.resize = new ResizeObserver(() => this.plot?.setSize(this.size()));
    this.resize.observe(container);
  }

  /**
   * Shows `metric` of `compared` (money in `currency` when given); a new metric or length builds a new plot (its
   * axis steps differ), new data only redraws.
   */
  show(compared: Compared, metric: string, scale: number, currency?: string): void {
    const p = this.plotted;
    const same = this.compared?.periods[0] === compared.periods[0] && p?.metric === metric && p.scale === scale && p.currency === currency;
    this.compared = compared;
    const data = chartData(compared, metric);
    if (this.plot && same && this.plot.data[0].length === data[0].length) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.plotted = { metric, scale, currency };
    this.plot = new uPlot(this.options(scale, currency), data, this.container);
  }

  destroy(): void {
    this.resize.disconnect();
    this.plot?.destroy();
    this.plot = undefined;
  }

  private size(): { width: number; height: number } {
    return { width: Math.max(240, this.container.clientWidth), height: 240 };
  }

  private periodLabel(period: string | undefined): string {
    if (period === undefined) return '';
    return this.opts.kind === 'day' ? formatDayWithWeekday(period, this.opts.locale) : formatMonth(period, this.opts.locale);
  }

  private options(scale: number, currency: string | undefined): uPlot.Options {
    const { kind, locale } = this.opts;
    const fmt = (v: MetricValue | null) => (v === null ? '–' : formatMetric(v, scale, locale, currency));
    // Away from the cursor the legend shows the newest period (today, this month) rather than blanks.
    const at = (u: uPlot, idx: number | null | undefined) => idx ?? u.data[0].length - 1;
    const periodAt = (i: number, which: 'periods' | 'previousPeriods') => this.compared?.[which][i];
    const valueAt = (i: number, which: 'current' | 'previous') => pointValue(this.compared, which, i, this.plotted?.metric ?? '');
    // The legend's value, exact (not the plotted float), marked when the API says that point's value is an estimate.
    const shown = (i: number, which: 'current' | 'previous') => {
      const v = valueAt(i, which);
      const estimate = v !== null && this.plotted !== undefined && isEstimate(this.compared?.[which][i], this.plotted.metric);
      return (estimate ? ESTIMATE_MARK : '') + fmt(v);
    };
    return {
      ...this.size(),
      // Room on the right for the newest period's label, which sits on the last point.
      padding: [12, 36, 0, 0],
      // Periods are the store's calendar days and months, plotted at their UTC midnights: read them back in UTC.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
      cursor: { drag: { x: false, y: false, setScale: false }, points: { size: 7 } },
      legend: { live: true },
      scales: {
        x: { time: true },
        y: { range: (_u, _min, max) => [0, niceCeil(max)] },
      },
      axes: [
        {
          stroke: '#4b5563',
          grid: { show: false },
          ticks: { stroke: '#d1d5db' },
          splits: (u) => pickTicks(u.data[0] as number[], u.bbox.width / uPlot.pxRatio / (kind === 'day' ? 78 : 70)),
          values: (_u, splits) => splits.map((s) => this.periodLabel(new Date(s * 1e3).toISOString().slice(0, kind === 'day' ? 10 : 7))),
        },
        {
          stroke: '#4b5563',
          // Narrow screens (375 px) keep more room for the plot.
          size: (u) => (u.width < 480 ? 44 : 56),
          grid: { stroke: '#eceef2' },
          ticks: { show: false },
          ...(scale === 0 ? { incrs: COUNT_INCRS } : {}),
          values: (_u, splits) => splits.map((v) => formatCompact(v, locale, currency)),
        },
      ],
      series: [
        { label: kind === 'day' ? 'Day' : 'Month', value: (u, _v, _si, idx) => this.periodLabel(periodAt(at(u, idx), 'periods')) || '–' },
        {
          label: this.opts.currentLabel,
          stroke: CURRENT_COLOR,
          fill: 'rgba(37, 99, 235, 0.07)',
          width: 2,
          points: { show: kind === 'month', size: 6 },
          value: (u, _v, _si, idx) => shown(at(u, idx), 'current'),
        },
        {
          label: this.opts.previousLabel,
          stroke: PREVIOUS_COLOR,
          width: 1.5,
          dash: [6, 4],
          points: { show: kind === 'month', size: 5 },
          value: (u, _v, _si, idx) => {
            const i = at(u, idx);
            const period = periodAt(i, 'previousPeriods');
            const v = shown(i, 'previous');
            return valueAt(i, 'previous') !== null && period ? `${v} (${this.periodLabel(period)})` : v;
          },
        },
      ],
    };
  }
}
