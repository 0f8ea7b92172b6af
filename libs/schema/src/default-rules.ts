import type { RulesInput } from './rules.schema';

/**
 * The e-commerce rules Tally ships with. They cover the article's examples (store ViewCount, OrderCount),
 * revenue kept exactly in minor units, per-product counts, and per-visitor history for segment rules.
 *
 * Flush policies (the cost knob; queries are live and exact whatever they are, because they merge Redis):
 * store rows are written at most once an hour (few rows, touched all day); product rows at most once a day
 * (a long-tail catalogue: most products are touched a few times a day, so writing them more often buys
 * nothing but write units); a visitor's row once the visitor has been idle for 30 minutes (the session
 * ended), and at the latest a day after its oldest unwritten count; page rows (top pages) once a day, like products. Unwritten counts wait in Redis, which
 * must run with AOF on.
 */
export const defaultRules = {
  metrics: {
    ViewCount: { code: 'v', description: 'product views' },
    PageViewCount: { code: 'pg', description: 'page views' },
    OrderCount: { code: 'o', description: 'orders' },
    Revenue: { code: 'r', scale: 2, description: 'order revenue in currency units (kept exactly in minor units)' },
    ProductViews: { code: 'pv', description: 'views of one product by one visitor, keyed by product' },
    ProductOrders: { code: 'po', description: 'order lines of one product by one visitor, keyed by product' },
    PageViews: { code: 'pgv', description: "views of one page, on the page's row (top pages)" },
    UniqueVisitors: { code: 'uv', description: 'distinct visitors (exact up to 300, HyperLogLog above: standard error 0.81%)' },
  },
  entities: {
    store: { key: [], flush: { kind: 'every', minutes: 60 }, distinct: { UniqueVisitors: 'visitor' } },
    product: { key: ['product'], flush: { kind: 'every', minutes: 1_440 }, rank: true, distinct: { UniqueVisitors: 'visitor' } },
    visitor: { key: ['visitor'], flush: { kind: 'idle', idleMinutes: 30, maxAgeMinutes: 1_440 } },
    page: { key: ['page'], flush: { kind: 'every', minutes: 1_440 }, rank: true },
  },
  // Page paths hold `/`: they are keyed by their base64url encoding and decoded in answers.
  dimensions: { page: { format: 'path' } },
  events: {
    view: {
      dims: { product: 'required', visitor: 'optional' },
      counters: [
        { entity: 'store', metric: 'ViewCount' },
        { entity: 'product', metric: 'ViewCount' },
        { entity: 'visitor', metric: 'ViewCount' },
        { entity: 'visitor', metric: 'ProductViews', by: 'product' },
      ],
    },
    page_view: {
      dims: { visitor: 'optional', page: 'optional' },
      counters: [
        { entity: 'store', metric: 'PageViewCount' },
        { entity: 'visitor', metric: 'PageViewCount' },
        { entity: 'page', metric: 'PageViews' },
      ],
    },
    order: {
      dims: { visitor: 'optional' },
      value: 'required',
      counters: [
        { entity: 'store', metric: 'OrderCount' },
        { entity: 'store', metric: 'Revenue', op: 'sum' },
        { entity: 'visitor', metric: 'OrderCount' },
        { entity: 'visitor', metric: 'Revenue', op: 'sum' },
      ],
    },
    order_item: {
      dims: { product: 'required', visitor: 'optional' },
      value: 'optional',
      counters: [
        { entity: 'product', metric: 'OrderCount' },
        { entity: 'product', metric: 'Revenue', op: 'sum' },
        { entity: 'visitor', metric: 'ProductOrders', by: 'product' },
      ],
    },
  },
} satisfies RulesInput;

/** The same rules with every row written once a day: the cheapest policy (one write per row per day). */
export const cheapestRules = {
  ...defaultRules,
  entities: {
    store: { key: [], flush: { kind: 'every', minutes: 1_440 }, distinct: { UniqueVisitors: 'visitor' } },
    product: { key: ['product'], flush: { kind: 'every', minutes: 1_440 }, rank: true, distinct: { UniqueVisitors: 'visitor' } },
    visitor: { key: ['visitor'], flush: { kind: 'every', minutes: 1_440 } },
    page: { key: ['page'], flush: { kind: 'every', minutes: 1_440 }, rank: true },
  },
} satisfies RulesInput;
