import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeKeyValue } from '@tally/key-layout';
import {
  compileRules,
  decimalToUnits,
  defaultRules,
  fromUnits,
  rollup,
  RulesError,
  toUnits,
  validateEvents,
  cheapestRules,
  type DistinctAdds,
} from './index';

const rules = compileRules(defaultRules);
const now = Date.parse('2023-05-03T12:00:00Z');
const limits = { now, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };

describe('decimal values are exact', () => {
  it('reads a sum past the maximum of one value exactly (query answers), while one value stays bounded', () => {
    expect(toUnits('1000000000253.84', 2)).toEqual({ ok: false, reason: 'must be at most 1000000000000' });
    expect(decimalToUnits('1000000000253.84', 2)).toEqual({ ok: true, units: '100000000025384' });
    expect(decimalToUnits('99999999999999999999999999999999999.99', 2)).toEqual({
      ok: true,
      units: '9999999999999999999999999999999999999',
    });
    expect(decimalToUnits('1000000000000.01', 2, 1e12)).toEqual({ ok: false, reason: 'must be at most 1000000000000' });
  });

  it('scales decimals to integer units from their digits', () => {
    expect(toUnits(19.99, 2)).toEqual({ ok: true, units: '1999' });
    expect(toUnits('0.1', 2)).toEqual({ ok: true, units: '10' });
    expect(toUnits(0.3, 2)).toEqual({ ok: true, units: '30' });
    expect(toUnits(1e3, 0)).toEqual({ ok: true, units: '1000' });
    expect(toUnits('1.50', 1)).toEqual({ ok: true, units: '15' });
    expect(toUnits(0, 2)).toEqual({ ok: true, units: '0' });
    expect(toUnits('1.5e2', 0)).toEqual({ ok: true, units: '150' });
    expect(toUnits(1e-7, 2)).toMatchObject({ ok: false, reason: 'has more than 2 decimal places' });
  });

  it('refuses what cannot be a count', () => {
    expect(toUnits(-1, 2)).toMatchObject({ ok: false, reason: 'must not be negative' });
    expect(toUnits(Number.NaN, 2)).toMatchObject({ ok: false, reason: 'must be a finite number' });
    expect(toUnits(Number.POSITIVE_INFINITY, 2)).toMatchObject({ ok: false });
    expect(toUnits('1e309', 2)).toMatchObject({ ok: false, reason: 'must be at most 1000000000000' });
    expect(toUnits('NaN', 2)).toMatchObject({ ok: false, reason: 'must be a decimal number' });
    expect(toUnits('1.234', 2)).toMatchObject({ ok: false });
    expect(toUnits(2.5, 0)).toMatchObject({ ok: false, reason: 'must be a whole number' });
    // The maximum is exact: a cent over it is refused, as number and as string; the maximum itself is taken.
    expect(toUnits(1000000000000.01, 2)).toMatchObject({ ok: false, reason: 'must be at most 1000000000000' });
    expect(toUnits('1000000000000.01', 2)).toMatchObject({ ok: false, reason: 'must be at most 1000000000000' });
    expect(toUnits('1000000000000.00', 2)).toEqual({ ok: true, units: '100000000000000' });
    expect(toUnits('999999999999.99', 2)).toEqual({ ok: true, units: '99999999999999' });
  });

  it('refuses an exponent beyond ±400 rather than reading another number, with or without a maximum', () => {
    // 1e500 was read as 1e400, and 10^450 × 1e-500 (= 1e-50) as 1e50.
    expect(decimalToUnits('1e500', 0)).toEqual({ ok: false, reason: 'must have an exponent between -400 and 400' });
    expect(decimalToUnits(`1${'0'.repeat(450)}e-500`, 2)).toEqual({ ok: false, reason: 'must have an exponent between -400 and 400' });
    expect(toUnits('1E+401', 2)).toEqual({ ok: false, reason: 'must have an exponent between -400 and 400' });
    expect(decimalToUnits('1e400', 0)).toEqual({ ok: true, units: `1${'0'.repeat(400)}` });
    expect(decimalToUnits(`1${'0'.repeat(400)}e-400`, 0)).toEqual({ ok: true, units: '1' });
    expect(toUnits('1e-400', 2)).toEqual({ ok: false, reason: 'has more than 2 decimal places' });
  });

  it('sums of many decimal values have no float drift', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 10_000_00 }), { maxLength: 200 }), (cents) => {
        const values = cents.map((c) => c / 100);
        const total = values.reduce((s, v) => s + BigInt((toUnits(v, 2) as { units: string }).units), 0n);
        expect(total).toBe(cents.reduce((s, c) => s + BigInt(c), 0n));
      }),
    );
    expect(fromUnits(1999n, 2)).toBe('19.99');
    expect(fromUnits(1900, 2)).toBe('19');
    expect(fromUnits(5, 2)).toBe('0.05');
    expect(fromUnits(0, 2)).toBe('0');
  });
});

describe('validateEvents', () => {
  const ok = { type: 'view', ts: '2023-05-03T10:15:00.000Z', dims: { product: 'P1', visitor: 'V9' } };

  it('accepts and normalizes valid events', () => {
    const r = validateEvents(rules, [ok, { type: 'order', ts: now - 1000, value: 19.99, dims: { visitor: 'V9' } }], limits);
    expect(r.errors).toEqual([]);
    expect(r.acceptedIndexes).toEqual([0, 1]);
    expect(r.events[0]).toEqual({ type: 'view', ts: Date.parse('2023-05-03T10:15:00Z'), dims: { product: 'P1', visitor: 'V9' } });
    expect(r.events[1]!.value).toBe('19.99');
  });

  it('gives each value one spelling, whatever the JSON number or decimal string sent (the Idempotency-Key fingerprint compares it)', () => {
    const order = (value: number | string) => ({ type: 'order', ts: now - 1000, value, dims: { visitor: 'V9' } });
    const spellings: Array<[Array<number | string>, string]> = [
      [[0.1, '0.10', ' 0.1 ', '1e-1', '00.100', '10e-2'], '0.1'],
      [[100, '1e2', '100.00', '1E+2', '0100'], '100'],
      [[0, '0.00', '-0', '0e5'], '0'],
      [[19.99, '19.990', '1999e-2'], '19.99'],
    ];
    for (const [values, canonical] of spellings) {
      const r = validateEvents(rules, values.map(order), limits);
      expect([r.errors, r.events.map((e) => e.value)]).toEqual([[], values.map(() => canonical)]);
    }
  });

  it('refuses a date that does not exist, naming ts', () => {
    const days = ['2026-11-31T12:00:00Z', '2026-02-29T00:00:00Z', '2026-13-01T00:00:00Z', '2026-04-00T00:00:00Z'];
    const r = validateEvents(
      rules,
      days.map((ts) => ({ ...ok, ts })),
      { ...limits, now: Date.parse('2026-12-01T00:00:00Z') },
    );
    expect(r.events).toEqual([]);
    expect(r.errors.map((e) => `${e.index}:${e.field}`)).toEqual(['0:ts', '1:ts', '2:ts', '3:ts']);
    const leap = validateEvents(rules, [{ ...ok, ts: '2024-02-29T12:00:00Z' }], { ...limits, now: Date.parse('2024-03-01T00:00:00Z') });
    expect(leap.errors).toEqual([]);
  });

  it('says when a refused ts reads as epoch seconds or microseconds instead of milliseconds', () => {
    const at = Math.floor(now / 1000) * 1000 - 60_000;
    const r = validateEvents(
      rules,
      [
        { ...ok, ts: at / 1000 },
        { ...ok, ts: String(at / 1000) },
        { ...ok, ts: at * 1000 },
        { ...ok, ts: now - 40 * 86_400_000 },
      ],
      limits,
    );
    const iso = new Date(at).toISOString();
    expect(r.errors.map((e) => `${e.index}:${e.field}: ${e.reason}`)).toEqual([
      `0:ts: is older than the lateness horizon of 35 days (as epoch seconds it would be ${iso}; ts takes epoch milliseconds)`,
      `1:ts: is older than the lateness horizon of 35 days (as epoch seconds it would be ${iso}; ts takes epoch milliseconds)`,
      `2:ts: is more than 300s in the future (as epoch microseconds it would be ${iso}; ts takes epoch milliseconds)`,
      '3:ts: is older than the lateness horizon of 35 days',
    ]);
  });

  it('names each bad event by index, field and reason', () => {
    const bad = [
      { ...ok, type: 'click' },
      { ...ok, dims: { visitor: 'V9' } },
      { ...ok, dims: { product: 'P#1' } },
      { ...ok, dims: { product: 'P|1' } },
      { ...ok, dims: { product: 'a[0]' } },
      { ...ok, dims: { product: 'x'.repeat(129) } },
      { ...ok, dims: { product: 'nul\u0000' } },
      { ...ok, dims: { product: '😀' } },
      { ...ok, id: 'x'.repeat(129) },
      { ...ok, ts: 'yesterday' },
      { ...ok, ts: '2023-05-03T10:15:00' },
      { ...ok, ts: now + 3_600_000 },
      { ...ok, ts: '2020-01-01T00:00:00Z' },
      { type: 'order', ts: now, value: -5 },
      { type: 'order', ts: now, value: 1.234 },
      { type: 'order', ts: now },
      { ...ok, value: 3 },
      { ...ok, extra: 1 },
      'not an object',
      null,
      [1, 2],
      { ...ok, dims: { product: 'P1', colour: 'red' } },
    ];
    const r = validateEvents(rules, bad, limits);
    expect(r.events).toEqual([]);
    const byIndex = new Map<number, string[]>();
    for (const e of r.errors) byIndex.set(e.index, [...(byIndex.get(e.index) ?? []), `${e.field}: ${e.reason}`]);
    expect(byIndex.size).toBe(bad.length);
    expect(byIndex.get(0)![0]).toMatch(/^type: unknown event type "click"/);
    expect(byIndex.get(1)).toEqual(['dims.product: is required']);
    for (const i of [2, 3, 4, 5, 6, 7]) expect(byIndex.get(i)![0]).toMatch(/^dims\.product: must be 1-128 characters/);
    expect(byIndex.get(8)![0]).toMatch(/^id: /);
    expect(byIndex.get(9)![0]).toMatch(/^ts: must be an ISO-8601/);
    expect(byIndex.get(10)![0]).toMatch(/^ts: must be an ISO-8601/);
    expect(byIndex.get(11)).toEqual(['ts: is more than 300s in the future']);
    expect(byIndex.get(12)).toEqual(['ts: is older than the lateness horizon of 35 days']);
    expect(byIndex.get(13)).toEqual(['value: must not be negative']);
    expect(byIndex.get(14)).toEqual(['value: has more than 2 decimal places']);
    expect(byIndex.get(15)).toEqual(['value: is required']);
    expect(byIndex.get(16)).toEqual(['value: is not allowed for type view']);
    expect(byIndex.get(17)).toEqual(['extra: unknown field; known: type, ts, id, dims, value']);
    for (const i of [18, 19, 20]) expect(byIndex.get(i)).toEqual(['(event): must be a JSON object']);
    expect(byIndex.get(21)![0]).toMatch(/^dims\.colour: unknown dimension/);
  });

  it('names the event types that take a dimension an event type does not', () => {
    const r = validateEvents(rules, [{ type: 'order', ts: now, value: '19.99', dims: { visitor: 'V1', product: 'P1' } }], limits);
    expect(r.errors.map((e) => `${e.field}: ${e.reason}`)).toEqual([
      'dims.product: unknown dimension for type order; allowed: visitor (product is a dimension of view, order_item)',
    ]);
    expect(validateEvents(rules, [{ ...ok, dims: { product: 'P1', colour: 'red' } }], limits).errors[0]!.reason).toBe(
      'unknown dimension for type view; allowed: product, visitor',
    );
  });

  it('says a missing or empty type is required, as it says of a missing dim or value', () => {
    const r = validateEvents(
      rules,
      [
        { ts: now, dims: { product: 'P1' } },
        { ...ok, type: '' },
        { ...ok, type: 7 },
      ],
      limits,
    );
    expect(r.errors.map((e) => `${e.index} ${e.field}: ${e.reason}`)).toEqual([
      '0 type: is required',
      '1 type: is required',
      '2 type: must be a string',
    ]);
  });

  it('says a missing ts is required, and what a wrong one must be', () => {
    const { ts: _ts, ...noTs } = ok;
    const r = validateEvents(rules, [noTs, { ...ok, ts: true }], limits);
    expect(r.errors.map((e) => `${e.index} ${e.field}: ${e.reason}`)).toEqual([
      '0 ts: is required',
      '1 ts: must be an ISO-8601 timestamp with a zone (e.g. 2023-05-03T10:15:00Z) or epoch milliseconds',
    ]);
  });

  it('names non-finite numbers (JSON 1e309 parses to Infinity)', () => {
    const r = validateEvents(
      rules,
      JSON.parse(`[{"type":"order","ts":${now},"value":1e309},{"type":"order","ts":1e309,"value":1}]`),
      limits,
    );
    expect(r.errors.map((e) => `${e.field}: ${e.reason}`)).toEqual([
      'value: must be a finite number or a decimal string of at most 64 characters',
      'ts: must be an ISO-8601 timestamp with a zone (e.g. 2023-05-03T10:15:00Z) or epoch milliseconds',
    ]);
  });

  it('refuses __proto__ and constructor keys without touching prototypes', () => {
    const evil = JSON.parse(
      '[{"type":"view","ts":1683108900000,"dims":{"product":"P1"},"__proto__":{"polluted":1}},{"type":"view","ts":1683108900000,"dims":{"product":"P1","constructor":"x"}},' +
        '{"type":"view","ts":1683108900000,"dims":{"product":"P1","__proto__":"x"}},{"type":"view","ts":1683108900000,"dims":{"__proto__":{"product":"P1"}}}]',
    );
    const r = validateEvents(rules, evil, limits);
    expect(r.events).toEqual([]);
    expect(r.errors.map((e) => e.field)).toEqual(['__proto__', 'dims.constructor', 'dims.__proto__', 'dims.__proto__']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('keys page paths by their base64url encoding, so `/` and any character reach the keys without touching a separator', () => {
    const ev = (page: string) => ({ type: 'page_view', ts: now, dims: { visitor: 'V1', page } });
    const paths = ['/', '/shop/shoes/red', '/a%23b', '/ünïcødé/页面', '/x|y:z.w', `/${'a'.repeat(95)}`];
    const r = validateEvents(rules, paths.map(ev), limits);
    expect(r.errors).toEqual([]);
    expect(r.events.map((e) => e.dims['page'])).toEqual(paths.map((p) => Buffer.from(p).toString('base64url')));
    expect(r.events.map((e) => decodeKeyValue(e.dims['page']!))).toEqual(paths);
    const deltas = rollup(rules, 'S', 'UTC', r.events);
    expect(deltas.get(`S#page#${Buffer.from('/shop/shoes/red').toString('base64url')}`)).toEqual(new Map([['2023-123|pgv', 1]]));
    const bad = validateEvents(rules, ['shop', '/a b', '/a?x=1', '/a#top', `/${'a'.repeat(96)}`, '/\u0001'].map(ev), limits);
    expect(bad.events).toEqual([]);
    expect(bad.errors.map((e) => [e.index, e.field])).toEqual([0, 1, 2, 3, 4, 5].map((i) => [i, 'dims.page']));
    expect(bad.errors[0]!.reason).toMatch(/URL path/);
    // Lone surrogates (legal JSON escapes) have no UTF-8: each would be keyed as U+FFFD, merging /a\ud800 into /a\ufffd.
    const lone = validateEvents(rules, ['/a\ud800', '/a\udfff', '/\udc00\ud800'].map(ev), limits);
    expect(lone.errors.map((e) => [e.index, e.field, e.reason])).toEqual(
      [0, 1, 2].map((i) => [i, 'dims.page', expect.stringMatching(/^must be well-formed Unicode/)]),
    );
    expect(validateEvents(rules, ['/a\ufffd', '/\ud83d\ude00'].map(ev), limits).errors).toEqual([]);
    // Other dimensions stay ids.
    expect(validateEvents(rules, [{ type: 'page_view', ts: now, dims: { visitor: '/V1', page: '/' } }], limits).errors).toMatchObject([
      { field: 'dims.visitor' },
    ]);
  });
});

describe('rollup', () => {
  it('bins each event of a batch in its own local day in an offset that cuts the 15-minute slots', () => {
    // +00:01 (a store made before such offsets were refused): 23:50Z is Dec 31, 23:59:30Z Jan 1, in one slot of UTC.
    const day = (ts: string) => ({ type: 'view', ts, dims: { product: 'P1' } });
    for (const order of [
      ['2025-12-31T23:50:00Z', '2025-12-31T23:59:30Z'],
      ['2025-12-31T23:59:30Z', '2025-12-31T23:50:00Z'],
    ]) {
      const { events } = validateEvents(rules, order.map(day), { ...limits, now: Date.parse('2026-01-01T12:00:00Z') });
      expect(Object.fromEntries(rollup(rules, 'S1', '+00:01', events).get('S1')!)).toEqual({ '2025-365|v': 1, '2026-001|v': 1 });
    }
  });

  it('turns events into day-binned deltas per row, summed per batch', () => {
    const { events } = validateEvents(
      rules,
      [
        { type: 'view', ts: '2023-05-03T10:15:00Z', dims: { product: 'P1', visitor: 'V9' } },
        { type: 'view', ts: '2023-05-03T11:15:00Z', dims: { product: 'P1' } },
        { type: 'order', ts: '2023-05-03T11:30:00Z', dims: { visitor: 'V9' }, value: 19.99 },
        { type: 'order', ts: '2023-05-03T11:31:00Z', value: '0.01' },
        { type: 'view', ts: '2023-04-30T23:59:00Z', dims: { product: 'P1' } },
      ],
      limits,
    );
    const d = rollup(rules, 'S1', 'UTC', events);
    const plain = Object.fromEntries([...d].map(([pk, m]) => [pk, Object.fromEntries(m)]));
    expect(plain).toEqual({
      S1: { '2023-123|v': 2, '2023-123|o': 2, '2023-123|r': 2000, '2023-120|v': 1 },
      'S1#product#P1': { '2023-123|v': 2, '2023-120|v': 1 },
      'S1#visitor#V9': { '2023-123|v': 1, '2023-123|pv#P1': 1, '2023-123|o': 1, '2023-123|r': 1999 },
    });
  });

  it('keeps the fields of each day apart when a batch goes back and forth between days (per-metric and `by` fields, distinct members)', () => {
    const day = (d: string, product: string, visitor: string) => ({
      type: 'view',
      ts: `2023-05-${d}T10:15:00Z`,
      dims: { product, visitor },
    });
    const { events } = validateEvents(
      rules,
      [day('03', 'P1', 'V1'), day('01', 'P2', 'V1'), day('03', 'P2', 'V2'), day('01', 'P1', 'V1'), day('03', 'P1', 'V1')],
      limits,
    );
    const distinct: DistinctAdds = new Map();
    const d = rollup(rules, 'S1', 'UTC', events, new Map(), distinct);
    const plain = Object.fromEntries([...d].map(([pk, m]) => [pk, Object.fromEntries(m)]));
    expect(plain).toEqual({
      S1: { '2023-123|v': 3, '2023-121|v': 2 },
      'S1#product#P1': { '2023-123|v': 2, '2023-121|v': 1 },
      'S1#product#P2': { '2023-121|v': 1, '2023-123|v': 1 },
      'S1#visitor#V1': { '2023-123|v': 2, '2023-123|pv#P1': 2, '2023-121|v': 2, '2023-121|pv#P2': 1, '2023-121|pv#P1': 1 },
      'S1#visitor#V2': { '2023-123|v': 1, '2023-123|pv#P2': 1 },
    });
    const members = Object.fromEntries([...distinct].map(([pk, m]) => [pk, Object.fromEntries([...m].map(([f, set]) => [f, set.size]))]));
    expect(members).toEqual({
      S1: { '2023-123|uv': 2, '2023-121|uv': 1 },
      'S1#product#P1': { '2023-123|uv': 1, '2023-121|uv': 1 },
      'S1#product#P2': { '2023-121|uv': 1, '2023-123|uv': 1 },
    });
  });

  it('bins by the store time zone', () => {
    const ev = [{ type: 'view', ts: Date.parse('2023-05-03T20:00:00Z'), dims: { product: 'P1' } }];
    expect([...rollup(rules, 'S', 'Asia/Kathmandu', ev).get('S')!.keys()]).toEqual(['2023-124|v']);
    expect([...rollup(rules, 'S', 'America/Los_Angeles', ev).get('S')!.keys()]).toEqual(['2023-123|v']);
  });

  it('counts only own dims: one an event inherits (a polluted prototype) is absent', () => {
    const dims = Object.assign(Object.create({ visitor: 'V-INHERITED' }) as Record<string, string>, { product: 'P1' });
    const deltas = rollup(rules, 'S', 'UTC', [{ type: 'view', ts: now, dims }]);
    expect([...deltas.keys()]).toEqual(['S', 'S#product#P1']);
    const distinct: DistinctAdds = new Map();
    rollup(rules, 'S', 'UTC', [{ type: 'view', ts: now, dims }], new Map(), distinct);
    expect(distinct.size).toBe(0);
  });

  it('keeps huge sums exact with bigint', () => {
    const ev = Array.from({ length: 10_000 }, () => ({ type: 'order', ts: now, value: '999999999999.99', dims: {} }));
    const total = rollup(rules, 'S', 'UTC', ev).get('S')!.get('2023-123|r');
    expect(BigInt(total!)).toBe(99999999999999n * 10_000n);
  });
});

describe('rules', () => {
  it('maps short codes both ways', () => {
    expect(rules.attrMetric('ViewCount')).toBe('v');
    expect(rules.attrMetric('ProductViews', 'P.1')).toBe('pv#P.1');
    expect(rules.parseAttrMetric('pv#P.1')).toEqual({ metric: 'ProductViews', sub: 'P.1' });
    expect(rules.parseAttrMetric('zz')).toBeUndefined();
    expect(rules.entityOfPk('S1')).toBe('store');
    expect(rules.entityOfPk('S1#visitor#V')).toBe('visitor');
    expect(rules.policyOfPk('S1#visitor#V')).toEqual({ kind: 'idle', idleMinutes: 30, maxAgeMinutes: 1440 });
    expect(compileRules(cheapestRules).policyOfPk('S1')).toEqual({ kind: 'every', minutes: 1440 });
  });

  it('stops with a message naming the bad rule', () => {
    const bad = (patch: (r: any) => void) => {
      const r = structuredClone(defaultRules) as any;
      patch(r);
      return () => compileRules(r);
    };
    expect(bad((r) => (r.events.view.counters[1].entity = 'shop'))).toThrowError(
      new RulesError('rollup rules: events.view.counters.1: unknown entity "shop"'),
    );
    expect(bad((r) => (r.events.view.counters[0].metric = 'Clicks'))).toThrowError(/events\.view\.counters\.0: unknown metric "Clicks"/);
    expect(bad((r) => (r.entities.product.flush = { kind: 'weekly' }))).toThrowError(/^rollup rules: entities\.product\.flush/);
    expect(bad((r) => (r.entities.product.flush = { kind: 'bucket', spread: true }))).toThrowError(/entities\.product\.flush/);
    expect(bad((r) => (r.entities.product.flush = { kind: 'every', minutes: 60, spread: 'yes' }))).toThrowError(/flush\.spread/);
    const spread = (value: boolean | undefined) => bad((r) => (r.entities.product.flush = { kind: 'every', minutes: 60, spread: value }))();
    expect(spread(true).policyOfPk('S#product#P')).toEqual({ kind: 'every', minutes: 60, spread: true });
    // false is the policy without it, fingerprint included (a collector and an aggregator may spell it either way).
    expect(spread(false).fingerprint).toBe(spread(undefined).fingerprint);
    expect(spread(true).fingerprint).not.toBe(spread(undefined).fingerprint);
    expect(bad((r) => (r.metrics.OrderCount.code = 'v'))).toThrowError(/metrics\.OrderCount: attribute name "v" is also used by ViewCount/);
    expect(bad((r) => (r.events.view.counters[3].by = 'colour'))).toThrowError(/dimension "colour" is not declared/);
    expect(bad((r) => r.events.view.counters.push({ entity: 'store', metric: 'Revenue', op: 'sum' }))).toThrowError(/sum counter needs/);
  });

  it("refuses a metric whose attribute name on TOTAL would be one of the items' own (TTL, watermark, keys)", () => {
    const withMetric = (patch: (r: any) => void) => {
      const r = structuredClone(defaultRules) as any;
      patch(r);
      return () => compileRules(r);
    };
    // `expiresAt` is the TTL attribute: adding counts to it would have DynamoDB delete the TOTAL item.
    expect(withMetric((r) => (r.metrics.OrderCount.code = 'expiresAt'))).toThrowError(
      /^rollup rules: metrics\.OrderCount: attribute name "expiresAt" would write to the reserved item attribute "expiresAt" \(reserved: pk, sk, wm, wm\.p, wm\.x, wm\.h, expiresAt\); give the metric another code$/,
    );
    for (const code of ['wm', 'pk', 'sk'])
      expect(withMetric((r) => (r.metrics.ViewCount.code = code))).toThrowError(
        new RegExp(`^rollup rules: metrics\\.ViewCount: attribute name "${code}" would write to the reserved item attribute "${code}" `),
      );
    // A metric without a code is written under its name.
    expect(
      withMetric((r) => {
        r.metrics.wm = { description: 'no code' };
        r.events.view.counters.push({ entity: 'store', metric: 'wm' });
      }),
    ).toThrowError(/metrics\.wm: attribute name "wm" would write to the reserved item attribute "wm" .*another name or a code$/);
    // Only the attribute name counts: a reserved word as the metric's name, or in another case, is fine.
    expect(() => compileRules({ ...defaultRules, metrics: { ...defaultRules.metrics, expiresAt: { code: 'ex' } } })).not.toThrow();
    for (const code of ['WM', 'Pk', 'expiresat', 'wmp', 'wm_p', 'sk1'])
      expect(withMetric((r) => (r.metrics.ViewCount.code = code))).not.toThrow();
  });
});

describe('the rows keyed by the visitor (erasure and retention reach them) and the visitor data erasure cannot reach', () => {
  /** The default rules with a second entity keyed by the visitor alone, one keyed by it and a product, and counts by visitor on product rows. */
  const more = compileRules({
    ...defaultRules,
    metrics: { ...defaultRules.metrics, Viewers: { code: 'vw', description: 'views of a product, keyed by visitor' } },
    entities: {
      ...defaultRules.entities,
      shopper: { key: ['visitor'], flush: { kind: 'bucket' } },
      basket: { key: ['visitor', 'product'], flush: { kind: 'bucket' } },
    },
    events: {
      ...defaultRules.events,
      view: {
        ...defaultRules.events.view,
        counters: [
          ...defaultRules.events.view.counters,
          { entity: 'shopper', metric: 'ViewCount' },
          { entity: 'basket', metric: 'ViewCount' },
          { entity: 'product', metric: 'Viewers', by: 'visitor' },
          // On a row keyed by the visitor: erased and expired with it.
          { entity: 'shopper', metric: 'Viewers', by: 'visitor' },
        ],
      },
    },
  });

  it("keys by the visitor every entity whose key is the visitor entity's dimension alone, in the rules' order", () => {
    const flush = { kind: 'bucket' } as const;
    expect([...rules.visitorEntities]).toEqual(['visitor']);
    expect([...more.visitorEntities]).toEqual(['visitor', 'shopper']);
    // The visitor entity's own dimension, whatever its name; without a visitor entity, `visitor`.
    const byCustomer = compileRules({
      metrics: { ViewCount: {} },
      entities: { visitor: { key: ['customer'], flush }, buyer: { key: ['customer'], flush }, other: { key: ['visitor'], flush } },
      events: { view: { dims: { customer: 'required', visitor: 'required' }, counters: [{ entity: 'visitor', metric: 'ViewCount' }] } },
    });
    expect([...byCustomer.visitorEntities]).toEqual(['visitor', 'buyer']);
    const noVisitor = compileRules({
      metrics: { ViewCount: {} },
      entities: { shopper: { key: ['visitor'], flush }, store: { key: [], flush } },
      events: { view: { dims: { visitor: 'required' }, counters: [{ entity: 'shopper', metric: 'ViewCount' }] } },
    });
    expect([...noVisitor.visitorEntities]).toEqual(['shopper']);
  });

  it("keys a visitor's history by every entity whose key includes the visitor's dimension (retention), alone or with others", () => {
    const flush = { kind: 'bucket' } as const;
    expect([...rules.visitorKeyedEntities]).toEqual(['visitor']);
    // Those keyed by the visitor alone first, then those keyed by it and another dimension: basket's items expire too.
    expect([...more.visitorKeyedEntities]).toEqual(['visitor', 'shopper', 'basket']);
    // The visitor entity itself keyed by the visitor and a site: its rows are not erasable, but they still expire (as
    // they did when the writer stamped the rows of the entity named `visitor`).
    const bySite = compileRules({
      metrics: { ViewCount: {} },
      entities: { store: { key: [], flush }, visitor: { key: ['visitor', 'site'], flush }, site: { key: ['site'], flush } },
      events: {
        view: {
          dims: { visitor: 'required', site: 'required' },
          counters: [
            { entity: 'store', metric: 'ViewCount' },
            { entity: 'visitor', metric: 'ViewCount' },
          ],
        },
      },
    });
    expect({ erased: [...bySite.visitorEntities], expired: [...bySite.visitorKeyedEntities] }).toEqual({
      erased: [],
      expired: ['visitor'],
    });
    expect(bySite.visitorDataOutOfReach).toEqual([
      {
        rule: 'entities.visitor',
        entity: 'visitor',
        why: "keyed by visitor and site (key [visitor, site]): a visitor's rows of it are not erased with the visitor (a store's historyMonths expires them)",
      },
    ]);
  });

  it("lists the visitor's data on other rows: entities keyed by the visitor and another dimension, counters by visitor", () => {
    expect(rules.visitorDataOutOfReach).toEqual([]);
    expect(more.visitorDataOutOfReach).toEqual([
      {
        rule: 'entities.basket',
        entity: 'basket',
        why: "keyed by visitor and product (key [visitor, product]): a visitor's rows of it are not erased with the visitor (a store's historyMonths expires them)",
      },
      {
        rule: 'events.view.counters.6',
        entity: 'product',
        why: "counts Viewers by visitor on product rows: a visitor's counts there are neither erased with the visitor nor expired by a store's historyMonths",
      },
    ]);
  });
});

describe('rules that would count wrongly are refused, naming the rule', () => {
  const bad = (patch: (r: any) => void) => {
    const r = structuredClone(defaultRules) as any;
    patch(r);
    return () => compileRules(r);
  };
  const refused = (patch: (r: any) => void) => {
    try {
      bad(patch)();
    } catch (err) {
      expect(err).toBeInstanceOf(RulesError);
      return (err as Error).message;
    }
    throw new Error('the rules compiled');
  };

  it('refuses sum counters of one event type with different scales (a value the edge takes would fail the batch in the rollup)', () => {
    const mixed = {
      metrics: { Revenue: { scale: 2 }, Units: {} },
      entities: { store: { key: [], flush: { kind: 'bucket' } } },
      events: {
        order: {
          value: 'required',
          counters: [
            { entity: 'store', metric: 'Revenue', op: 'sum' },
            { entity: 'store', metric: 'Units', op: 'sum' },
          ],
        },
      },
    } as const;
    expect(() => compileRules(mixed)).toThrowError(
      new RulesError(
        "rollup rules: events.order.counters.1: the sum counters of an event type must share one scale (Units has 0, counters.0's metric Revenue has 2)",
      ),
    );
    // One scale: the value is checked at the edge against it, and the rollup takes what the edge took.
    const same = compileRules({ ...mixed, metrics: { Revenue: { scale: 2 }, Units: { scale: 2 } } });
    expect(same.eventTypes.get('order')!.valueScale).toBe(2);
    const { events, errors } = validateEvents(same, [{ type: 'order', ts: now, value: '1.5' }], limits);
    expect(errors).toEqual([]);
    expect(rollup(same, 'S', 'UTC', events).get('S')).toEqual(
      new Map([
        ['2023-123|Revenue', 150],
        ['2023-123|Units', 150],
      ]),
    );
    expect(rules.eventTypes.get('order')!.valueScale).toBe(2);
    expect(rules.eventTypes.get('view')!.valueScale).toBe(0);
  });

  it('refuses names every object inherits (constructor, toString, __proto__…), which were found where the rules define none', () => {
    // Was a TypeError (entity.key is not iterable).
    expect(refused((r) => r.events.view.counters.push({ entity: 'constructor', metric: 'ViewCount' }))).toBe(
      'rollup rules: events.view.counters.4.entity: "constructor" is a property of every JavaScript object: choose another name',
    );
    // Was a sum of scale NaN, counting 1.5 as 15.
    expect(refused((r) => r.events.order.counters.push({ entity: 'store', metric: 'toString', op: 'sum' }))).toMatch(
      /^rollup rules: events\.order\.counters\.4\.metric: "toString" is a property of every JavaScript object/,
    );
    // Was an absent optional dim counted on row `S#shelf#function Object() { [native code] }`.
    expect(
      refused((r) => {
        r.entities.shelf = { key: ['constructor'], flush: { kind: 'bucket' } };
        r.events.view.dims.constructor = 'optional';
        r.events.view.counters.push({ entity: 'shelf', metric: 'ViewCount' });
      }),
    ).toMatch(/^rollup rules: entities\.shelf\.key\.0: "constructor" is a property/);
    expect(refused((r) => (r.events.view.dims.valueOf = 'optional'))).toMatch(
      /^rollup rules: events\.view\.dims\.valueOf: "valueOf" is a property/,
    );
    expect(refused((r) => (r.entities.hasOwnProperty = { key: ['product'], flush: { kind: 'bucket' } }))).toMatch(
      /^rollup rules: entities\.hasOwnProperty: "hasOwnProperty" is a property/,
    );
    expect(refused((r) => (r.metrics.ViewCount.code = 'toString'))).toMatch(
      /^rollup rules: metrics\.ViewCount\.code: "toString" is a property/,
    );
    expect(refused((r) => (r.events.constructor = r.events.view))).toMatch(
      /^rollup rules: events\.constructor: "constructor" is a property/,
    );
    // JSON.parse makes `__proto__` an own key, which zod's records dropped without a word (the type's counters vanished).
    const json = JSON.stringify(defaultRules);
    for (const [text, path] of [
      [json.replace('"events":{', '"events":{"__proto__":{"counters":[{"entity":"store","metric":"ViewCount"}]},'), 'events.__proto__'],
      [json.replace('"dims":{"product":"required"', '"dims":{"__proto__":"optional","product":"required"'), 'events.view.dims.__proto__'],
    ] as const)
      expect(() => compileRules(JSON.parse(text))).toThrowError(
        new RulesError(`rollup rules: ${path}: "__proto__" is not allowed as a name`),
      );
    // The compiled rules look names up as their own.
    expect(rules.entityOfPk('S#constructor#x')).toBeUndefined();
    expect(rules.rankOfPk('S#constructor#x')).toBeUndefined();
    expect(rules.policyOfPk('S#toString#x')).toEqual({ kind: 'bucket' });
    expect(() => rules.pkOf('S', 'constructor', ['x'])).toThrowError(new RulesError('unknown entity "constructor"'));
    expect(rules.scaleOf('toString')).toBe(0);
    expect(rules.attrMetric('valueOf')).toBe('valueOf');
  });

  it('refuses a distinct count of a dimension no event type counting on the entity declares (it would read 0 for ever)', () => {
    expect(refused((r) => (r.entities.store.distinct = { UniqueVisitors: 'vistor' }))).toBe(
      'rollup rules: entities.store.distinct.UniqueVisitors: no event type counting on store declares dimension "vistor" (it would count nothing)',
    );
    // Declared, but only by event types that count on other entities.
    expect(refused((r) => (r.entities.page.distinct = { UniqueVisitors: 'product' }))).toMatch(
      /^rollup rules: entities\.page\.distinct\.UniqueVisitors: no event type counting on page declares dimension "product"/,
    );
    expect(() => bad((r) => (r.entities.page.distinct = { UniqueVisitors: 'visitor' }))()).not.toThrow();
  });

  it('refuses an event type that lists the same counter twice (every event counted twice)', () => {
    expect(refused((r) => r.events.view.counters.push({ entity: 'store', metric: 'ViewCount' }))).toBe(
      'rollup rules: events.view.counters.4: repeats counters.0 (entity store, metric ViewCount): every event would be counted twice',
    );
    expect(refused((r) => r.events.view.counters.splice(1, 0, { entity: 'visitor', metric: 'ProductViews', by: 'product' }))).toBe(
      'rollup rules: events.view.counters.4: repeats counters.1 (entity visitor, metric ProductViews, by product): every event would be counted twice',
    );
    // The same metric on another entity, or by another dimension, is another counter.
    expect(() =>
      bad((r) => {
        r.events.view.counters.push({ entity: 'visitor', metric: 'ProductViews', by: 'visitor' });
        r.events.view.counters.push({ entity: 'page', metric: 'ViewCount' });
        r.events.view.dims.page = 'optional';
      })(),
    ).not.toThrow();
  });

  it('refuses an entity named store with a key (queries take `store` for the store row)', () => {
    expect(
      refused((r) => {
        r.entities.shop = r.entities.store;
        r.entities.store = { key: ['product'], flush: { kind: 'bucket' } };
        r.events.view.counters[0].entity = 'shop';
      }),
    ).toBe(
      'rollup rules: entities.store: the name store stands for the store row (an empty key) in queries; give this entity another name',
    );
    // The store row under another name is fine.
    expect(() =>
      bad((r) => {
        r.entities.shop = r.entities.store;
        delete r.entities.store;
        for (const e of Object.values(r.events) as any[]) for (const c of e.counters) if (c.entity === 'store') c.entity = 'shop';
      })(),
    ).not.toThrow();
  });
});
