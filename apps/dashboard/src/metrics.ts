// The metrics a store owner sees, in the order shown, with their names in plain words.
import { UNIQUE_VISITORS } from '@tally/contracts';
import type { MetricInfo } from './api';
import { toNumber, type MetricValue } from './format';

export interface ShownMetric {
  name: string;
  label: string;
  /** The same in a sentence: "no product views yet". */
  noun: string;
  scale: number;
  /**
   * Whether the store's rules count it for the entity shown, so it can be asked for (the API lists it, without a key,
   * and a distinct count for this entity). Unique visitors are always shown first; until the API counts them their
   * card says "—" and nothing is asked for them.
   */
  counted: boolean;
  /** Days add up to the range (counts, sums); unique visitors do not: a range's figure is the API's own total. */
  additive: boolean;
  /** The ISO 4217 code money metrics are shown in (the store's currency), when the store has one. */
  currency?: string;
}

/** `one`: the noun after 1 ("1 order"), when it differs. */
const KNOWN: Record<string, { label: string; noun: string; one?: string; money?: boolean; additive?: boolean }> = {
  [UNIQUE_VISITORS]: { label: 'Unique visitors', noun: 'unique visitors', one: 'unique visitor', additive: false },
  ViewCount: { label: 'Product views', noun: 'product views', one: 'product view' },
  OrderCount: { label: 'Orders', noun: 'orders', one: 'order' },
  Revenue: { label: 'Revenue', noun: 'revenue', money: true },
  PageViewCount: { label: 'Page views', noun: 'page views', one: 'page view' },
  PageViews: { label: 'Page views', noun: 'page views', one: 'page view' },
};

/** `m`'s noun after `value` in a sentence: "1 order", "2 orders". */
export const nounAfter = (m: ShownMetric, value: MetricValue | undefined): string =>
  (toNumber(value) === 1 && KNOWN[m.name]?.one) || m.noun;

/**
 * Whether `entity` (`store`, `product`, `page`) can be asked for `info` as the dashboard asks, without a key: the API
 * refuses a metric counted only with a key (ProductViews#<product>), and one the entity's rows do not count
 * (`countedOn`: "entity product does not count PageViewCount").
 */
function countedFor(info: MetricInfo | undefined, entity: string): info is MetricInfo {
  return info !== undefined && info.keyedBy === null && info.countedOn.includes(entity);
}

/**
 * The metrics among `wanted` the store counts for `entity`, in `wanted` order; any other is left out, except unique
 * visitors, which are shown (as not counted) so the first card is always there.
 */
export function shownMetrics(
  available: readonly MetricInfo[],
  wanted: readonly string[],
  entity: string,
  currency?: string | null,
): ShownMetric[] {
  const byName = new Map(available.map((m) => [m.name, m]));
  return wanted.flatMap((name) => {
    const found = byName.get(name);
    const info = countedFor(found, entity) ? found : undefined;
    if (!info && name !== UNIQUE_VISITORS) return [];
    const known = KNOWN[name] ?? { label: name, noun: info?.description || name };
    const shown: ShownMetric = {
      name,
      label: known.label,
      noun: known.noun,
      scale: info?.scale ?? 0,
      counted: info !== undefined,
      additive: known.additive ?? true,
    };
    if (known.money && currency) shown.currency = currency;
    return [shown];
  });
}

/** Store-wide: unique visitors first, then what the issue asks for (views, orders, revenue), then page views. */
export const STORE_METRICS = [UNIQUE_VISITORS, 'ViewCount', 'OrderCount', 'Revenue', 'PageViewCount'] as const;
/** Per product (the default rules count product views, order lines and their revenue). */
export const PRODUCT_METRICS = [UNIQUE_VISITORS, 'ViewCount', 'OrderCount', 'Revenue'] as const;
/** The top product lists: by views and by orders. */
export const TOP_METRICS = ['ViewCount', 'OrderCount'] as const;
/** The top pages list: page views on each page's row. */
export const TOP_PAGE_METRIC = 'PageViews';
