import { describe, expect, it } from 'vitest';
import { shownMetrics, STORE_METRICS } from './metrics';

describe('shownMetrics', () => {
  it("keeps the store's metrics in the dashboard's order, with plain names and scales", () => {
    const available = [
      { name: 'Revenue', scale: 2, description: 'order revenue in minor units (cents)', keyedBy: null },
      { name: 'OrderCount', scale: 0, description: 'orders', keyedBy: null },
      { name: 'ProductViews', scale: 0, description: 'views of one product by one visitor', keyedBy: 'product' },
      { name: 'ViewCount', scale: 0, description: 'product views', keyedBy: null },
    ];
    expect(shownMetrics(available, STORE_METRICS)).toEqual([
      { name: 'ViewCount', label: 'Product views', noun: 'product views', scale: 0 },
      { name: 'OrderCount', label: 'Orders', noun: 'orders', scale: 0 },
      { name: 'Revenue', label: 'Revenue', noun: 'revenue', scale: 2 },
    ]);
    expect(shownMetrics(available, ['ProductViews'])).toEqual([
      { name: 'ProductViews', label: 'ProductViews', noun: 'views of one product by one visitor', scale: 0 },
    ]);
  });
});
