import { describe, expect, it } from 'vitest';
import { shownMetrics, STORE_METRICS } from './metrics';

describe('shownMetrics', () => {
  const available = [
    { name: 'Revenue', scale: 2, description: 'order revenue in currency units (kept exactly in minor units)', keyedBy: null },
    { name: 'OrderCount', scale: 0, description: 'orders', keyedBy: null },
    { name: 'ProductViews', scale: 0, description: 'views of one product by one visitor', keyedBy: 'product' },
    { name: 'ViewCount', scale: 0, description: 'product views', keyedBy: null },
  ];

  it("keeps the store's metrics in the dashboard's order, unique visitors first even before the API counts them", () => {
    expect(shownMetrics(available, STORE_METRICS)).toEqual([
      { name: 'UniqueVisitors', label: 'Unique visitors', noun: 'unique visitors', scale: 0, counted: false, additive: false },
      { name: 'ViewCount', label: 'Product views', noun: 'product views', scale: 0, counted: true, additive: true },
      { name: 'OrderCount', label: 'Orders', noun: 'orders', scale: 0, counted: true, additive: true },
      { name: 'Revenue', label: 'Revenue', noun: 'revenue', scale: 2, counted: true, additive: true },
    ]);
    expect(shownMetrics(available, ['ProductViews'])).toEqual([
      { name: 'ProductViews', label: 'ProductViews', noun: 'views of one product by one visitor', scale: 0, counted: true, additive: true },
    ]);
  });

  it('counts unique visitors once the API lists them, and puts the store currency on money only', () => {
    const withUv = [...available, { name: 'UniqueVisitors', scale: 0, description: 'distinct visitors', keyedBy: null }];
    const shown = shownMetrics(withUv, STORE_METRICS, 'EUR');
    expect(shown[0]).toMatchObject({ name: 'UniqueVisitors', counted: true, additive: false });
    expect(shown.filter((m) => m.currency).map((m) => [m.name, m.currency])).toEqual([['Revenue', 'EUR']]);
    expect(shownMetrics(withUv, STORE_METRICS, null).some((m) => m.currency)).toBe(false);
  });
});
