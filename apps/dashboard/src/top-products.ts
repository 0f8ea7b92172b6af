// The store's top products of the last 30 days, by views and by orders, each linking to the product's own page.
import type { TopItem } from './api';
import type { ViewContext } from './context';
import { h, replaceChildren } from './dom';
import { RequestError } from './errors';
import { formatMetric } from './format';
import { MAX_BACKOFF_MS, RETRY_MS } from './entity-view';
import { startPoller } from './live';
import type { ShownMetric } from './metrics';
import { productHref } from './router';

/**
 * Which products are listed changes when the API's rankings do (each sealed bucket); the values shown are exact and
 * live (the API reads them like any series), so they are asked for every 15 s, and at once when today's numbers move.
 */
const TOP_INTERVAL_MS = 15_000;
const TOP_LIMIT = 10;

export interface TopProducts {
  element: HTMLElement;
  /** Asks for the lists again now (today's numbers moved). */
  refresh(): void;
  destroy(): void;
}

export function mountTopProducts(ctx: ViewContext, metrics: ShownMetric[]): TopProducts {
  const lists = metrics.map((m) => {
    const body = h('div', { class: 'top-body', 'data-testid': `top-${m.name}` }, h('p', { class: 'empty' }, 'Loading…'));
    const title = m.name === 'OrderCount' ? 'Most ordered' : m.name === 'ViewCount' ? 'Most viewed' : `Most ${m.noun}`;
    return { metric: m, body, element: h('div', { class: 'panel top-list' }, h('h3', {}, title), body) };
  });
  const element = h(
    'section',
    { class: 'top', 'aria-labelledby': 'top-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'top-title' }, 'Top products'), h('span', { class: 'section-note' }, 'last 30 days')),
    h('div', { class: 'top-grid' }, ...lists.map((l) => l.element)),
    h('p', { class: 'section-note' }, "Lists are ranked when a bucket closes (every 15 minutes by default): a product's first views can take that long to put it on them. The numbers shown are live."),
  );

  function render(m: ShownMetric, body: HTMLElement, items: TopItem[]): void {
    if (items.length === 0) {
      replaceChildren(body, h('p', { class: 'empty' }, `No ${m.noun} of any product in the last 30 days.`));
      return;
    }
    replaceChildren(
      body,
      h(
        'ol',
        {},
        ...items.map((item) =>
          h(
            'li',
            {},
            h('a', { href: productHref(item.id), 'data-product': item.id }, item.id),
            h('span', { class: 'top-value' }, formatMetric(item.value, m.scale, ctx.locale)),
          ),
        ),
      ),
    );
  }

  const pollers = lists.map((l) =>
    startPoller({
      intervalMs: TOP_INTERVAL_MS,
      retryMs: RETRY_MS,
      maxBackoffMs: MAX_BACKOFF_MS,
      run: async () => {
        if (document.hidden && l.body.querySelector('ol')) return; // refreshed when the tab is shown again
        render(l.metric, l.body, await ctx.api.top({ entity: 'product', metric: l.metric.name, range: 'last30d', limit: TOP_LIMIT }));
      },
      onSuccess: () => ctx.status.ok(`top:${l.metric.name}`),
      onError: (err) => {
        if (err instanceof RequestError) replaceChildren(l.body, h('p', { class: 'inline-error' }, `Tally could not list these: ${err.message}`));
        return ctx.status.failed(`top:${l.metric.name}`, err);
      },
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
