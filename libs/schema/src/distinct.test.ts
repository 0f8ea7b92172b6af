import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  compileRules,
  defaultRules,
  distinctMember,
  flattenDistinct,
  rollup,
  rollupDistinct,
  unflattenDistinct,
  type RulesInput,
} from './index';

const rules = compileRules(defaultRules);
const day = Date.parse('2026-03-09T12:00:00Z');

describe('distinct counts in the rules', () => {
  it('adds each visitor to the sketches of the store and product rows its events count on, per local day', () => {
    const adds = rollupDistinct(rules, 'S', 'Asia/Kathmandu', [
      { type: 'view', ts: day, dims: { product: 'P1', visitor: 'V1' } },
      { type: 'view', ts: day + 1, dims: { product: 'P1', visitor: 'V1' } },
      { type: 'view', ts: day, dims: { product: 'P2' } }, // no visitor: nothing to add
      { type: 'order', ts: day + 12 * 3_600_000, value: '1', dims: { visitor: 'V2' } }, // the next day in Kathmandu
    ]);
    const members = (pk: string) => Object.fromEntries([...(adds.get(pk) ?? [])].map(([f, s]) => [f, [...s]]));
    expect(members('S')).toEqual({ '2026-068|uv': [distinctMember('V1')], '2026-069|uv': [distinctMember('V2')] });
    expect(members('S#product#P1')).toEqual({ '2026-068|uv': [distinctMember('V1')] });
    expect(adds.has('S#product#P2')).toBe(false);
    expect([...adds.keys()].some((pk) => pk.includes('#visitor#'))).toBe(false);
    expect(Buffer.from(distinctMember('V1'), 'latin1')).toHaveLength(8);
  });

  it('adds a visitor only for an event counted on the row: not one a sum counter skips (no value, or 0)', () => {
    const refunds = compileRules({
      metrics: { Refunded: { scale: 2 }, Refunds: {}, Refunders: {} },
      entities: { store: { key: [], flush: { kind: 'bucket' }, distinct: { Refunders: 'visitor' } } },
      events: {
        refund: { dims: { visitor: 'optional' }, value: 'optional', counters: [{ entity: 'store', metric: 'Refunded', op: 'sum' }] },
        refund_line: {
          dims: { visitor: 'optional' },
          value: 'optional',
          counters: [
            { entity: 'store', metric: 'Refunded', op: 'sum' },
            { entity: 'store', metric: 'Refunds' },
          ],
        },
      },
    });
    const events = [
      { type: 'refund', ts: day, dims: { visitor: 'V1' } }, // no value: nothing counted on the row
      { type: 'refund', ts: day, dims: { visitor: 'V2' }, value: '0' }, // 0: nothing counted either
      { type: 'refund', ts: day, dims: { visitor: 'V3' }, value: '2.50' },
      { type: 'refund_line', ts: day, dims: { visitor: 'V4' } }, // counted by its count counter
    ];
    const adds = rollupDistinct(refunds, 'S', 'UTC', events);
    expect([...adds.get('S')!.get('2026-068|Refunders')!]).toEqual([distinctMember('V3'), distinctMember('V4')]);
    expect(rollup(refunds, 'S', 'UTC', events).get('S')).toEqual(
      new Map([
        ['2026-068|Refunded', 250],
        ['2026-068|Refunds', 1],
      ]),
    );
  });

  it('flattens the members for a job (per row and field, one base64 string of 8-byte ids) and back', () => {
    const visitors = Array.from({ length: 50 }, (_, i) => ({ type: 'view', ts: day, dims: { product: `P${i % 3}`, visitor: `V${i}` } }));
    const adds = rollupDistinct(rules, 'S', 'UTC', visitors);
    const flat = flattenDistinct(adds);
    expect(flat.slice(0, 3)).toEqual(['S', 1, '2026-068|uv']);
    expect(Buffer.from(String(flat[3]), 'base64')).toHaveLength(50 * 8);
    expect(flat.every((x) => typeof x === 'number' || !x.includes('{'))).toBe(true);
    expect(unflattenDistinct(flat)).toEqual(adds);
    expect(flattenDistinct(new Map())).toEqual([]);
  });

  it('keeps every member and job text byte for byte: the first 8 bytes of SHA-256, in base64 one after another', () => {
    // Sketches in Redis hold these bytes: a member that changed would count a visitor again.
    for (const v of ['V1', 'visitor-42', 'L2hvbWU', 'é/ü ☃'])
      expect(Buffer.from(distinctMember(v), 'latin1')).toEqual(createHash('sha256').update(v).digest().subarray(0, 8));
    const visitors = Array.from({ length: 40 }, (_, i) => ({ type: 'view', ts: day, dims: { product: `P${i % 3}`, visitor: `V${i}` } }));
    const adds = rollupDistinct(rules, 'S', 'UTC', visitors);
    const flat = flattenDistinct(adds);
    const expected: Array<string | number> = [];
    for (const [pk, fields] of adds) {
      expected.push(pk, fields.size);
      for (const [field, members] of fields) expected.push(field, Buffer.from([...members].join(''), 'latin1').toString('base64'));
    }
    expect(flat).toEqual(expected);
  });

  it('refuses a distinct metric that is unknown, scaled or also a counter, naming it', () => {
    const withDistinct = (metric: string): RulesInput => ({
      ...defaultRules,
      entities: { ...defaultRules.entities, store: { key: [], flush: { kind: 'bucket' }, distinct: { [metric]: 'visitor' } } },
    });
    expect(() => compileRules(withDistinct('Nope'))).toThrow('rollup rules: entities.store.distinct.Nope: unknown metric "Nope"');
    expect(() => compileRules(withDistinct('Revenue'))).toThrow(/distinct.Revenue: a distinct count needs a metric with scale 0/);
    expect(() => compileRules(withDistinct('ViewCount'))).toThrow(/distinct.ViewCount: ViewCount is also a counter's metric/);
    expect(rules.distinctOf('store')).toEqual([{ metric: 'UniqueVisitors', attrMetric: 'uv', dim: 'visitor' }]);
    expect(rules.distinctOf('visitor')).toEqual([]);
  });
});
