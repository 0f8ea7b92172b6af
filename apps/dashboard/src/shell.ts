// The signed-in page: a header (store, time zone, how fresh the numbers are, sign out), the banner that says when
// Tally cannot be reached or refuses the store's request rate, and the routed view below.
import type { ApiClient, StoreAnswer } from './api';
import type { StatusReporter, View, ViewContext } from './context';
import { h, replaceChildren, setText } from './dom';
import { mountEntityView } from './entity-view';
import { bannerText } from './banner';
import { KeyRejectedError, RateLimitedError, UnreachableError } from './errors';
import { formatAge, formatTimeInZone, formatZone, type Locale } from './format';
import { answerAgeMs } from './live';
import { PRODUCT_METRICS, shownMetrics, STORE_METRICS, TOP_METRICS, TOP_PAGE_METRIC } from './metrics';
import { OVERVIEW_HREF, parseRoute, type Route } from './router';
import { mountTopLists, productLists, type TopLists } from './top-lists';

/** Past this age the freshness mark turns amber: several polls in a row failed. */
const STALE_AFTER_MS = 10_000;

export interface ShellOptions {
  api: ApiClient;
  store: StoreAnswer;
  locale: Locale;
  onSignOut(): void;
  onKeyRejected(): void;
}

export function mountShell(root: HTMLElement, opts: ShellOptions): View {
  const { info, clockOffsetMs } = opts.store;
  const { currency } = info;
  const freshness = h('span', { class: 'freshness', 'data-testid': 'freshness' }, 'connecting…');
  const banner = h('div', { class: 'banner', role: 'status', 'data-testid': 'banner', hidden: true });
  const main = h('main', { class: 'view', id: 'view' });
  const zone = h(
    'span',
    { class: 'zone', 'data-testid': 'time-zone', title: 'Days and months are counted in this time zone' },
    formatZone(info.timeZone, Date.now(), opts.locale),
  );
  const brand = h(
    'div',
    { class: 'brand' },
    h('a', { href: OVERVIEW_HREF, class: 'logo' }, 'Tally'),
    h('span', { class: 'store', 'data-testid': 'store-name' }, info.store),
    zone,
  );
  const signOut = h('button', { type: 'button', class: 'sign-out', onclick: () => opts.onSignOut() }, 'Sign out');
  const header = h('header', { class: 'topbar' }, brand, h('div', { class: 'topbar-right' }, freshness, signOut));
  replaceChildren(root, header, banner, main);
  document.title = `Tally — ${info.store}`;

  let lastAsOf: string | undefined;
  const unreachable = new Set<string>();
  /** Sources refused by the store's request rate limit (429): when each is tried again (Date.now()), and why. */
  const rateLimited = new Map<string, { retryAt: number; err: RateLimitedError }>();
  let rejected = false;
  // A request started before "Sign out" may settle after it: its report must not touch the next page.
  let destroyed = false;

  function renderBanner(): void {
    const now = Date.now();
    const limited = [...rateLimited.values()];
    // The soonest next try that is still ahead (the countdown moves with the ticker), else one is being tried now.
    const ahead = limited.filter((l) => l.retryAt > now).sort((a, b) => a.retryAt - b.retryAt)[0];
    const text = bannerText(
      {
        unreachable: unreachable.size > 0,
        rateLimited: limited.length
          ? { retryInMs: ahead ? ahead.retryAt - now : 0, requestsPerSecond: limited[0]!.err.requestsPerSecond }
          : undefined,
        shownAt: lastAsOf ? formatTimeInZone(Date.parse(lastAsOf), info.timeZone, opts.locale) : undefined,
      },
      opts.locale,
    );
    banner.hidden = text === undefined;
    if (text !== undefined) setText(banner, text);
    // The API's own words (the limit, its window and setting) for whoever hovers.
    banner.title = unreachable.size === 0 && limited.length ? limited[0]!.err.message : '';
  }

  function renderFreshness(): void {
    if (!lastAsOf) return;
    const age = answerAgeMs(lastAsOf, clockOffsetMs, Date.now());
    setText(freshness, `updated ${formatAge(age)}`);
    freshness.title = `Numbers as of ${formatTimeInZone(Date.parse(lastAsOf), info.timeZone, opts.locale)} (${info.timeZone})`;
    freshness.classList.toggle('stale', age > STALE_AFTER_MS);
  }
  const ticker = setInterval(() => {
    renderFreshness();
    if (rateLimited.size > 0) renderBanner();
  }, 1_000);

  const status: StatusReporter = {
    ok(source) {
      if (destroyed) return;
      const wasUnreachable = unreachable.delete(source);
      if (rateLimited.delete(source) || wasUnreachable) renderBanner();
    },
    failed(source, err, retryInMs) {
      if (destroyed) return false;
      if (err instanceof KeyRejectedError) {
        if (!rejected) {
          rejected = true;
          // Not from inside a poller's callback: signing out destroys the poller that is reporting.
          queueMicrotask(() => opts.onKeyRejected());
        }
        return false;
      }
      if (err instanceof UnreachableError) {
        unreachable.add(source);
        rateLimited.delete(source);
        renderBanner();
      }
      if (err instanceof RateLimitedError) {
        // Tally answered: the store made more requests than its limit, so this one waits (at least Retry-After).
        rateLimited.set(source, { retryAt: Date.now() + retryInMs, err });
        unreachable.delete(source);
        renderBanner();
      }
      // A refused request (the view shows why): polling goes on, so the next range asked for is answered; the poller
      // does not ask the refused one again soon (live.ts RetryHint).
      return true;
    },
    fresh(asOf) {
      if (destroyed) return;
      lastAsOf = asOf;
      renderFreshness();
    },
  };

  const ctx: ViewContext = { api: opts.api, store: opts.store, locale: opts.locale, status };
  let view: View | undefined;
  /** The routed page: its head (title, links), then `body`. */
  const page = (body: HTMLElement, ...head: HTMLElement[]) => replaceChildren(main, h('div', { class: 'page-head' }, ...head), body);

  function mountRoute(route: Route): View {
    switch (route.name) {
      case 'overview': {
        const products = productLists(shownMetrics(info.metrics, TOP_METRICS, 'product', currency));
        const tops: TopLists[] = [mountTopLists(ctx, { title: 'Top products', testid: 'top-products' }, products)];
        // Top pages, when the rules rank pages by their views (the default rules do).
        const [pageViews] = shownMetrics(info.metrics, [TOP_PAGE_METRIC], 'page');
        if (pageViews && info.entities.includes('page')) {
          const pages = [{ entity: 'page', metric: pageViews, title: 'Most viewed pages', of: 'page' }];
          tops.push(mountTopLists(ctx, { title: 'Top pages', testid: 'top-pages' }, pages));
        }
        const body = h('div', { class: 'entity' });
        page(body, h('h1', {}, 'Store overview'));
        const entity = mountEntityView(body, ctx, {
          entity: 'store',
          metrics: shownMetrics(info.metrics, STORE_METRICS, 'store', currency),
          extra: tops.map((t) => t.element),
          onChange: () => {
            for (const t of tops) t.refresh();
          },
        });
        return {
          destroy() {
            entity.destroy();
            for (const t of tops) t.destroy();
          },
        };
      }
      case 'product': {
        const body = h('div', { class: 'entity' });
        page(
          body,
          h('a', { href: OVERVIEW_HREF, class: 'back' }, '← Store overview'),
          h('h1', { 'data-testid': 'product-title' }, 'Product ', h('span', { class: 'product-id' }, route.id)),
        );
        return mountEntityView(body, ctx, {
          entity: `product:${route.id}`,
          metrics: shownMetrics(info.metrics, PRODUCT_METRICS, 'product', currency),
        });
      }
      case 'not-found':
        page(
          h('p', {}, 'This address does not name a page of the dashboard. ', h('a', { href: OVERVIEW_HREF }, 'Go to the store overview.')),
          h('h1', {}, 'Nothing here'),
        );
        return { destroy() {} };
    }
  }

  function route(): void {
    view?.destroy();
    unreachable.clear();
    rateLimited.clear();
    renderBanner();
    view = mountRoute(parseRoute(location.hash));
    window.scrollTo(0, 0);
  }
  window.addEventListener('hashchange', route);
  route();

  return {
    destroy() {
      destroyed = true;
      window.removeEventListener('hashchange', route);
      clearInterval(ticker);
      view?.destroy();
    },
  };
}
