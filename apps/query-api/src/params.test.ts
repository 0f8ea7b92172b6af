import { compileRules, defaultRules } from '@tally/schema';
import { QueryError } from '@tally/query';
import { describe, expect, it } from 'vitest';
import { HttpProblem } from '@tally/http';
import { isRedisUnavailable } from '@tally/queues';
import { formatValue, formatValues, parseEntity, parseEntityIds, parseMetrics } from './params';

const rules = compileRules(defaultRules);

const fieldOf = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    // A QueryError is answered 400 naming its field (app.ts).
    return err instanceof HttpProblem
      ? `${err.statusCode} ${err.field}`
      : err instanceof QueryError
        ? `400 ${err.field}`
        : (err as { field?: string }).field;
  }
  return 'no error';
};

describe('formatValue', () => {
  it('answers counts as JSON numbers up to 2^53 - 1 and as strings beyond', () => {
    expect(formatValue(0n, 0)).toBe(0);
    expect(formatValue(9_007_199_254_740_991n, 0)).toBe(9_007_199_254_740_991);
    expect(formatValue(9_007_199_254_740_992n, 0)).toBe('9007199254740992');
    expect(formatValue(123_456_789_012_345_678_901n, 0)).toBe('123456789012345678901');
  });

  it('answers scaled metrics as exact decimal strings', () => {
    expect(formatValue(1999n, 2)).toBe('19.99');
    expect(formatValue(2n, 2)).toBe('0.02');
    expect(formatValue(2000n, 2)).toBe('20');
    expect(formatValue(0n, 2)).toBe('0');
    expect(formatValue(12_345_678_901_234_567_891n, 2)).toBe('123456789012345678.91');
  });

  it('formats keyed metrics by their base metric', () => {
    expect(formatValues(rules, { Revenue: 1n, 'ProductViews#P1': 3n })).toEqual({ Revenue: '0.01', 'ProductViews#P1': 3 });
  });
});

describe('entities and ids', () => {
  it('maps entity names and ids to rows of the key store only', () => {
    expect(parseEntity(rules, 'S1', 'store')).toEqual({ entity: 'store', id: 'S1', pk: 'S1' });
    expect(parseEntity(rules, 'S1', 'store:S1')).toEqual({ entity: 'store', id: 'S1', pk: 'S1' });
    expect(parseEntity(rules, 'S1', 'product:P:1')).toEqual({ entity: 'product', id: 'P:1', pk: 'S1#product#P:1' });
    expect(fieldOf(() => parseEntity(rules, 'S1', 'store:S2'))).toBe('404 entity');
    expect(fieldOf(() => parseEntity(rules, 'S1', 'store:'))).toBe('400 entity');
    expect(fieldOf(() => parseEntity(rules, 'S1', 'product:P#1'))).toBe('400 entity');
    expect(fieldOf(() => parseEntity(rules, 'S1', 'toString'))).toBe('400 entity');
    expect(parseEntityIds(rules, 'S1', 'product', ['P1,P2', 'P1', ' P3 '], 3).map((r) => r.pk)).toEqual([
      'S1#product#P1',
      'S1#product#P2',
      'S1#product#P3',
    ]);
    expect(fieldOf(() => parseEntityIds(rules, 'S1', 'product', 'P1,P2,P3,P4', 3))).toBe('400 ids');
  });
});

describe('page ids (an entity keyed by a path)', () => {
  const enc = (path: string) => Buffer.from(path).toString('base64url');
  const idsOf = (raw: string | string[]) => parseEntityIds(rules, 'S1', 'page', raw, 5).map((r) => r.id);

  it('takes each ids value starting with / as one path, commas and all', () => {
    expect(idsOf('/shop/a,b')).toEqual([enc('/shop/a,b')]);
    expect(idsOf(['/shop/a,b', ' /x ', '/shop/a,b'])).toEqual([enc('/shop/a,b'), enc('/x')]);
  });

  it('splits page keys on commas, as the ids of any other entity', () => {
    expect(idsOf(`${enc('/a')},${enc('/b')}`)).toEqual([enc('/a'), enc('/b')]);
    expect(fieldOf(() => idsOf([]))).toBe('400 ids');
  });
});

describe('parseMetrics', () => {
  const names = (entity: string, raw?: string) => parseMetrics(rules, entity, raw).map((m) => m.name);

  it("answers the entity's unkeyed metrics by default, and refuses a metric the entity does not count", () => {
    expect(names('page')).toEqual(['PageViews']);
    expect(names('visitor', 'ProductViews#P1,Revenue,Revenue')).toEqual(['ProductViews#P1', 'Revenue']);
    expect(names('store', 'UniqueVisitors,PageViewCount')).toEqual(['UniqueVisitors', 'PageViewCount']);
    expect(fieldOf(() => names('visitor', 'ViewCount,UniqueVisitors'))).toBe('400 metrics');
    expect(fieldOf(() => names('visitor', 'PageViews'))).toBe('400 metrics');
    expect(fieldOf(() => names('store', 'ProductViews#P1'))).toBe('400 metrics');
    expect(fieldOf(() => names('product', 'PageViewCount'))).toBe('400 metrics');
  });

  it('tells a metric counted with a key on one entity from the same metric counted without one on another', () => {
    const mixed = compileRules({
      metrics: { Views: {} },
      entities: {
        store: { key: [], flush: { kind: 'every', minutes: 60 } },
        visitor: { key: ['visitor'], flush: { kind: 'every', minutes: 60 } },
      },
      events: {
        view: {
          dims: { visitor: 'required', product: 'required' },
          counters: [
            { entity: 'store', metric: 'Views' },
            { entity: 'visitor', metric: 'Views', by: 'product' },
          ],
        },
      },
    });
    expect(parseMetrics(mixed, 'store', 'Views').map((m) => m.name)).toEqual(['Views']);
    expect(parseMetrics(mixed, 'visitor', 'Views#P1').map((m) => m.name)).toEqual(['Views#P1']);
    expect(() => parseMetrics(mixed, 'store', 'Views#P1')).toThrow('entity store does not count Views#<product>; it counts Views');
    expect(() => parseMetrics(mixed, 'visitor', 'Views')).toThrow('entity visitor does not count Views; it counts Views#<product>');
  });
});

describe('isRedisUnavailable', () => {
  it('tells ioredis connection failures from command errors', () => {
    expect(isRedisUnavailable(new Error("Stream isn't writeable and enableOfflineQueue options is false"))).toBe(true);
    expect(isRedisUnavailable(new Error('Connection is closed.'))).toBe(true);
    expect(isRedisUnavailable(new Error('Command timed out'))).toBe(true);
    expect(
      isRedisUnavailable(Object.assign(new Error('Reached the max retries per request limit'), { name: 'MaxRetriesPerRequestError' })),
    ).toBe(true);
    expect(isRedisUnavailable(new Error('LOADING Redis is loading the dataset in memory'))).toBe(true);
    expect(isRedisUnavailable(new Error('ERR wrong number of arguments'))).toBe(false);
    expect(isRedisUnavailable('nope')).toBe(false);
  });
});
