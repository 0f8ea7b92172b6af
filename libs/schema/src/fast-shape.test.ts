import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { eventInputSchema } from './event.schema';
import { fastEventShape } from './fast-shape';

/** Events near the schema's edges: mostly well-formed, with wrong types, lengths around the limits and odd keys mixed in. */
const str = (max: number) => fc.oneof(fc.string({ maxLength: max }), fc.string({ minLength: max - 2, maxLength: max + 2 }));
const num = fc.oneof(fc.double(), fc.integer(), fc.constantFrom(Number.NaN, Infinity, -Infinity, 1e309, -0));
const odd = fc.oneof(str(64), num, fc.constant(null), fc.constant(undefined), fc.boolean(), fc.array(fc.string(), { maxLength: 2 }));
const mostly = <T>(good: fc.Arbitrary<T>) =>
  fc.oneof({ arbitrary: good, weight: 6 }, { arbitrary: odd as fc.Arbitrary<unknown>, weight: 1 });
const dims = mostly(
  fc.dictionary(
    fc.oneof({ arbitrary: fc.constantFrom('product', 'visitor'), weight: 4 }, { arbitrary: str(64), weight: 1 }),
    fc.oneof(
      { arbitrary: fc.constantFrom('P1', 'a.b:c', 'V#9'), weight: 4 },
      { arbitrary: str(1024), weight: 1 },
      { arbitrary: num, weight: 1 },
    ),
    { maxKeys: 3 },
  ),
);
const event = fc
  .record(
    {
      type: mostly(fc.constantFrom('view', 'order', 'x'.repeat(64), 'x'.repeat(65), '')),
      ts: mostly(fc.oneof(fc.constantFrom('2023-05-03T10:15:00Z', 'x'.repeat(64), 'x'.repeat(65), ''), fc.integer())),
      id: mostly(fc.constantFrom('ok-id', 'bad id', 'x'.repeat(128), 'x'.repeat(129))),
      dims,
      value: mostly(fc.oneof(fc.double({ noNaN: true }), fc.constantFrom('19.99', '1'.repeat(64), '1'.repeat(65)))),
    },
    { requiredKeys: [] },
  )
  .chain((e) => fc.oneof({ arbitrary: fc.constant(e), weight: 5 }, { arbitrary: odd.map((x) => ({ ...e, extra: x })), weight: 1 }));

const defined = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

describe('fastEventShape', () => {
  it('accepts only what eventInputSchema accepts, with the same result', () => {
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(event, fc.anything()), (raw) => {
        const fast = fastEventShape(raw);
        if (fast === undefined) return;
        accepted++;
        const zod = eventInputSchema.safeParse(raw);
        expect(zod.success).toBe(true);
        expect(defined(fast)).toEqual(defined(zod.data as Record<string, unknown>));
      }),
      { numRuns: 5_000 },
    );
    expect(accepted).toBeGreaterThan(100); // the generator reaches the fast path, so the property is tested
  });

  it('takes the common well-formed events (so the hot path skips zod)', () => {
    expect(fastEventShape({ type: 'view', ts: '2023-05-03T10:15:00Z', dims: { product: 'P1' } })).toEqual({
      type: 'view',
      ts: '2023-05-03T10:15:00Z',
      dims: { product: 'P1' },
    });
    expect(fastEventShape({ type: 'order', ts: 1683108900000, id: 'o-1', value: 19.99 })).toEqual({
      type: 'order',
      ts: 1683108900000,
      id: 'o-1',
      value: 19.99,
      dims: {},
    });
    expect(fastEventShape({ type: 'view', ts: 1, dims: {}, extra: 1 })).toBeUndefined();
    expect(fastEventShape(Object.assign(Object.create({ inherited: 1 }), { type: 'view', ts: 1 }))).toBeUndefined();
  });
});
