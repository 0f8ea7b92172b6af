import { describe, expect, it } from 'vitest';
import { nounAfter, PRODUCT_METRICS, shownMetrics, STORE_METRICS } from './metrics';

describe('shownMetrics', () => {
  const all = ['store', 'product', 'visitor'];
  const available = [
    {
      name: 'Revenue',
      scale: 2,
      description: 'order revenue in currency units (kept exactly in minor units)',
      keyedBy: null,
      countedOn: all,
    },
    { name: 'OrderCount', scale: 0, description: 'orders', keyedBy: null, countedOn: all },
    { name: 'ProductViews', scale: 0, description: 'views of one product by one visitor', keyedBy: 'product', countedOn: ['visitor'] },
    { name: 'ViewCount', scale: 0, description: 'product views', keyedBy: null, countedOn: all },
  ];

  it("keeps the store's metrics in the dashboard's order, unique visitors first even before the API counts them", () => {
    expect(shownMetrics(available, STORE_METRICS, 'store')).toEqual([
      { name: 'UniqueVisitors', label: 'Unique visitors', noun: 'unique visitors', scale: 0, counted: false, additive: false },
      { name: 'ViewCount', label: 'Product views', noun: 'product views', scale: 0, counted: true, additive: true },
      { name: 'OrderCount', label: 'Orders', noun: 'orders', scale: 0, counted: true, additive: true },
      { name: 'Revenue', label: 'Revenue', noun: 'revenue', scale: 2, counted: true, additive: true },
    ]);
    const plain = [{ name: 'Visits', scale: 0, description: 'visits of the store', keyedBy: null, countedOn: ['store'] }];
    expect(shownMetrics(plain, ['Visits'], 'store')).toEqual([
      { name: 'Visits', label: 'Visits', noun: 'visits of the store', scale: 0, counted: true, additive: true },
    ]);
  });

  it('counts unique visitors once the API lists them, and puts the store currency on money only', () => {
    const withUv = [
      ...available,
      { name: 'UniqueVisitors', scale: 0, description: 'distinct visitors', keyedBy: null, countedOn: ['store'] },
    ];
    const shown = shownMetrics(withUv, STORE_METRICS, 'store', 'EUR');
    expect(shown[0]).toMatchObject({ name: 'UniqueVisitors', counted: true, additive: false });
    expect(shown.filter((m) => m.currency).map((m) => [m.name, m.currency])).toEqual([['Revenue', 'EUR']]);
    expect(shownMetrics(withUv, STORE_METRICS, 'store', null).some((m) => m.currency)).toBe(false);
  });

  it('leaves out what the API would refuse for the entity: a metric counted only with a key, a distinct count of other entities', () => {
    // ProductViews is asked only as ProductViews#<product> ("metric ProductViews is keyed by product: give a key").
    expect(shownMetrics(available, ['ProductViews', 'ViewCount'], 'product')).toEqual([
      { name: 'ViewCount', label: 'Product views', noun: 'product views', scale: 0, counted: true, additive: true },
    ]);
    // Unique visitors counted for the store only: a product page shows them as not counted, and asks nothing for them.
    const storeUv = [
      ...available,
      { name: 'UniqueVisitors', scale: 0, description: 'distinct visitors', keyedBy: null, countedOn: ['store'], distinctOn: ['store'] },
    ];
    expect(shownMetrics(storeUv, PRODUCT_METRICS, 'product').map((m) => [m.name, m.counted])).toEqual([
      ['UniqueVisitors', false],
      ['ViewCount', true],
      ['OrderCount', true],
      ['Revenue', true],
    ]);
    expect(shownMetrics(storeUv, STORE_METRICS, 'store')[0]).toMatchObject({ name: 'UniqueVisitors', counted: true });
    // Another distinct count, of products only: left out of the store's metrics, kept on a product's.
    const buyers = [
      { name: 'Buyers', scale: 0, description: 'distinct buyers', keyedBy: null, countedOn: ['product'], distinctOn: ['product'] },
    ];
    expect(shownMetrics(buyers, ['Buyers'], 'store')).toEqual([]);
    expect(shownMetrics(buyers, ['Buyers'], 'product')).toMatchObject([{ name: 'Buyers', counted: true }]);
    // A counter the rules put on the store and visitors only (custom rules): not asked for a product (a 400).
    const storeOnly = [
      ...available,
      { name: 'PageViewCount', scale: 0, description: 'page views', keyedBy: null, countedOn: ['store', 'visitor'] },
    ];
    expect(shownMetrics(storeOnly, ['PageViewCount', 'ViewCount'], 'product').map((m) => m.name)).toEqual(['ViewCount']);
    expect(shownMetrics(storeOnly, ['PageViewCount'], 'store').map((m) => m.name)).toEqual(['PageViewCount']);
  });

  it('says "1 order", not "1 orders"', () => {
    const [uv, views, orders, revenue] = shownMetrics(available, STORE_METRICS, 'store');
    expect([0, 1, 2, '9007199254740993'].map((n) => `${n} ${nounAfter(orders!, n)}`)).toEqual([
      '0 orders',
      '1 order',
      '2 orders',
      '9007199254740993 orders',
    ]);
    expect([nounAfter(uv!, 1), nounAfter(views!, 1), nounAfter(revenue!, '1.00'), nounAfter(views!, undefined)]).toEqual([
      'unique visitor',
      'product view',
      'revenue',
      'product views',
    ]);
  });
});
