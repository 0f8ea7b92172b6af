import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** A chart of a figure: a Vega-Lite spec with its data inline, rendered to SVG by `npm run bench`. */
export interface Chart {
  /** Kebab-case; the file is docs/charts/<figure>-<name>.svg. */
  name: string;
  /** Alt text and caption. */
  title: string;
  spec: TopLevelSpec;
}

/** Look shared by every chart: plain, readable on GitHub's light and dark backgrounds (white fill). */
const CONFIG: TopLevelSpec['config'] = {
  background: 'white',
  font: 'Helvetica, Arial, sans-serif',
  view: { stroke: null },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
  legend: { labelFontSize: 11, titleFontSize: 12 },
  title: { fontSize: 14, anchor: 'start' },
};

/** Renders a Vega-Lite spec to SVG in node (vega's SVG string renderer: no browser, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const vgSpec = compile({ ...spec, config: { ...CONFIG, ...spec.config } } as TopLevelSpec).spec;
  const view = new vega.View(vega.parse(vgSpec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders a figure's charts into `dir` (docs/charts); the markdown that shows them, with paths relative to docs/. */
export async function writeCharts(figure: string, charts: readonly Chart[], dir: string): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const file = (c: Chart) => `${figure}-${c.name}.svg`;
  for (const c of charts) writeFileSync(join(dir, file(c)), await renderSvg(c.spec));
  return charts.map((c) => `![${c.title}](charts/${file(c)})`).join('\n\n');
}

/**
 * Horizontal bars on a log scale with their values printed, for figures whose comparisons span orders of
 * magnitude (bars start at 1: a log scale has no zero).
 */
export function logBars(opts: {
  title: string;
  axisTitle: string;
  bars: ReadonlyArray<{ label: string; value: number; group?: string }>;
  groups?: { names: string[]; colors: string[] };
}): TopLevelSpec {
  const max = Math.max(...opts.bars.map((b) => b.value));
  return {
    title: opts.title,
    config: { axisY: { labelLimit: 0 } },
    width: 440,
    height: 34 * opts.bars.length,
    data: { values: opts.bars.map((b) => ({ ...b, group: b.group ?? '' })) },
    encoding: {
      y: { field: 'label', type: 'nominal', sort: null, title: null },
      x: { field: 'value', type: 'quantitative', scale: { type: 'log', domainMin: 1, domainMax: max * 6 }, title: opts.axisTitle },
    },
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          x2: { datum: 1 },
          color: opts.groups
            ? { field: 'group', type: 'nominal', title: null, scale: { domain: opts.groups.names, range: opts.groups.colors } }
            : { value: '#4c78a8' },
        },
      },
      { mark: { type: 'text', align: 'left', dx: 4 }, encoding: { text: { field: 'value', type: 'quantitative', format: ',.0f' } } },
    ],
  } as TopLevelSpec;
}

type Layer = Record<string, unknown>;

/**
 * A line (with points unless `mark` says otherwise) of `values`, both axes quantitative, one line per `color` field
 * value; `before` layers go under it (a shaded span), `after` layers over it (a target rule).
 */
export function lineChart(o: { title?: string; width?: number; height?: number; values: readonly object[]; x: Layer; y: Layer } & Layer) {
  const color = o['color'] ? { color: { field: o['color'], type: 'nominal', title: null } } : {};
  const encoding = { x: { type: 'quantitative', ...o.x }, y: { type: 'quantitative', ...o.y }, ...color };
  const line = { data: { values: o.values }, mark: { type: 'line', point: true, ...(o['mark'] as Layer) }, encoding };
  const layer = [...((o['before'] as Layer[]) ?? []), line, ...((o['after'] as Layer[]) ?? [])];
  return { ...(o.title ? { title: o.title } : {}), width: o.width ?? 520, height: o.height ?? 240, layer } as TopLevelSpec;
}

/** A dashed red rule at `value` across the chart (on the `axis` scale), with `label` written above it if given. */
export function targetRule(axis: 'x' | 'y', value: number, label?: string): Layer {
  const [at, mark] = [{ [axis]: { field: 'at', type: 'quantitative' } }, { color: '#d62728' }];
  const text = {
    mark: { ...mark, type: 'text', align: 'left', baseline: 'bottom', dx: 4, dy: -2, x: 0 },
    encoding: { ...at, text: { field: 'label' } },
  };
  return {
    data: { values: [{ at: value, label }] },
    layer: [{ mark: { ...mark, type: 'rule', strokeDash: [4, 4] }, encoding: at }, ...(label ? [text] : [])],
  };
}
