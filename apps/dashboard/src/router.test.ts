import { describe, expect, it } from 'vitest';
import { parseRoute, productHref } from './router';

describe('parseRoute', () => {
  it('routes the overview and product pages', () => {
    expect(parseRoute('')).toEqual({ name: 'overview' });
    expect(parseRoute('#/')).toEqual({ name: 'overview' });
    expect(parseRoute('#/product/P1')).toEqual({ name: 'product', id: 'P1' });
    expect(parseRoute('#/product/P1/')).toEqual({ name: 'product', id: 'P1' });
  });

  it('round-trips every product id the API accepts', () => {
    for (const id of ['P1', 'sku:42-b.x_y', 'a'.repeat(128)]) expect(parseRoute(productHref(id))).toEqual({ name: 'product', id });
  });

  it('refuses what is not a page', () => {
    expect(parseRoute('#/product/')).toEqual({ name: 'not-found', hash: '#/product/' });
    expect(parseRoute('#/product/%E0%A4%A')).toMatchObject({ name: 'not-found' });
    expect(parseRoute('#/product/has%20space')).toMatchObject({ name: 'not-found' });
    expect(parseRoute('#/product/' + 'a'.repeat(129))).toMatchObject({ name: 'not-found' });
    expect(parseRoute('#/settings')).toMatchObject({ name: 'not-found' });
  });
});
