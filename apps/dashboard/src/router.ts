// Hash routes, so the query API serves one index.html and never needs to know the dashboard's pages.

export type Route = { name: 'overview' } | { name: 'product'; id: string } | { name: 'not-found'; hash: string };

/** Product ids as the API accepts them (docs/DESIGN.md: `[A-Za-z0-9_.:-]{1,128}`). */
const PRODUCT_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, '');
  if (path === '' || path === '/') return { name: 'overview' };
  const m = /^\/product\/([^/]+)\/?$/.exec(path);
  if (m) {
    let id: string;
    try {
      id = decodeURIComponent(m[1]!);
    } catch {
      return { name: 'not-found', hash };
    }
    if (PRODUCT_ID.test(id)) return { name: 'product', id };
  }
  return { name: 'not-found', hash };
}

export function productHref(id: string): string {
  return `#/product/${encodeURIComponent(id)}`;
}

export const OVERVIEW_HREF = '#/';
