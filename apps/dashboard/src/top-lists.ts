// The store's top lists of the last 30 days: products by views and by orders (each linking to the product's own
// page), and pages by views (their paths, as the API decodes them).
import type { TopItem } from './api';
import { pollView, type ViewContext } from './context';
import { h, replaceChildren } from './dom';
import type { RequestError } from './errors';
import { formatMetric } from './format';
import type { ShownMetric } from './metrics';
import { productHref } from './router';

/**
 * The API ranks from every bucket, the open one included, so the lists agree with the cards at once; the values
 * shown are exact and live (the API reads them like any series), so they are asked for every 15 s, and at once
 * when today's numbers move.
 */
const TOP_INTERVAL_MS = 15_000;
const TOP_LIMIT = 10;

export interface TopListSpec {
  /** The ranked entity: `product`, `page`. */
  entity: string;
  metric: ShownMetric;
  title: string;
  /** What the list is of, in a sentence: "No page views of any page in the last 30 days." */
  of: string;
}

export interface TopLists {
  element: HTMLElement;
  /** Asks for the lists again now (today's numbers moved). */
  refresh(): void;
  destroy(): void;
}

/** The top products by views and by orders (the metrics the store counts). */
export function productLists(metrics: ShownMetric[]): TopListSpec[] {
  return metrics.map((m) => ({
    entity: 'product',
    metric: m,
    title: m.name === 'OrderCount' ? 'Most ordered' : m.name === 'ViewCount' ? 'Most viewed' : `Most ${m.noun}`,
    of: 'product',
  }));
}

/** One section of top lists (`testid` names the section; each list is `top-<entity>-<metric>`, products `top-<metric>`). */
export function mountTopLists(ctx: ViewContext, section: { title: string; testid: string }, specs: TopListSpec[]): TopLists {
  const testid = (s: TopListSpec) => (s.entity === 'product' ? `top-${s.metric.name}` : `top-${s.entity}-${s.metric.name}`);
  const lists = specs.map((spec) => {
    const body = h('div', { class: 'top-body', 'data-testid': testid(spec) }, h('p', { class: 'empty' }, 'Loading…'));
    return { spec, body, element: h('div', { class: 'panel top-list' }, h('h3', {}, spec.title), body) };
  });
  const element = h(
    'section',
    { class: 'top', 'aria-labelledby': `${section.testid}-title`, 'data-testid': section.testid },
    h(
      'div',
      { class: 'section-head' },
      h('h2', { id: `${section.testid}-title` }, section.title),
      h('span', { class: 'section-note' }, 'last 30 days'),
    ),
    h('div', { class: 'top-grid' }, ...lists.map((l) => l.element)),
  );

  function entry(spec: TopListSpec, item: TopItem): HTMLElement {
    if (spec.entity === 'product') return h('a', { href: productHref(item.id), 'data-product': item.id }, item.id);
    return h('span', { class: 'top-key', 'data-id': item.id, title: item.path ?? item.id }, item.path ?? item.id);
  }

  function render(spec: TopListSpec, body: HTMLElement, items: TopItem[]): void {
    const m = spec.metric;
    const value = (item: TopItem) => h('span', { class: 'top-value' }, formatMetric(item.value, m.scale, ctx.locale, m.currency));
    replaceChildren(
      body,
      items.length === 0
        ? h('p', { class: 'empty' }, `No ${m.noun} of any ${spec.of} in the last 30 days.`)
        : h('ol', {}, ...items.map((item) => h('li', {}, h('div', { class: 'top-row' }, entry(spec, item), value(item))))),
    );
  }

  const refused = (body: HTMLElement) => (err: RequestError) =>
    replaceChildren(body, h('p', { class: 'inline-error' }, `Tally could not list these: ${err.message}`));
  const pollers = lists.map((l) =>
    pollView(ctx, testid(l.spec), TOP_INTERVAL_MS, refused(l.body), async () => {
      if (document.hidden && l.body.querySelector('ol')) return false; // skipped: refreshed when the tab is shown again
      const query = { entity: l.spec.entity, metric: l.spec.metric.name, range: 'last30d', limit: TOP_LIMIT } as const;
      render(l.spec, l.body, await ctx.api.top(query, { patienceMs: TOP_INTERVAL_MS }));
    }),
  );

  return {
    element,
    refresh: () => {
      for (const p of pollers) p.poke();
    },
    destroy: () => {
      for (const p of pollers) p.stop();
    },
  };
}
