// The metrics a store owner sees, in the order shown, with their names in plain words.
import type { MetricInfo } from './api';

export interface ShownMetric {
  name: string;
  label: string;
  /** The same in a sentence: "no product views yet". */
  noun: string;
  scale: number;
}

const KNOWN: Record<string, { label: string; noun: string }> = {
  ViewCount: { label: 'Product views', noun: 'product views' },
  OrderCount: { label: 'Orders', noun: 'orders' },
  Revenue: { label: 'Revenue', noun: 'revenue' },
  PageViewCount: { label: 'Page views', noun: 'page views' },
};

/** The store's own metrics among `wanted`, in `wanted` order; a metric the store does not have is left out. */
export function shownMetrics(available: readonly MetricInfo[], wanted: readonly string[]): ShownMetric[] {
  const byName = new Map(available.map((m) => [m.name, m]));
  return wanted.flatMap((name) => {
    const info = byName.get(name);
    if (!info) return [];
    const known = KNOWN[name] ?? { label: name, noun: info.description || name };
    return [{ name, label: known.label, noun: known.noun, scale: info.scale ?? 0 }];
  });
}

/** Store-wide: what the issue asks for first (views, orders, revenue), then page views. */
export const STORE_METRICS = ['ViewCount', 'OrderCount', 'Revenue', 'PageViewCount'] as const;
/** Per product (the default rules count product views, order lines and their revenue). */
export const PRODUCT_METRICS = ['ViewCount', 'OrderCount', 'Revenue'] as const;
/** The top lists: by views and by orders. */
export const TOP_METRICS = ['ViewCount', 'OrderCount'] as const;
