import { localDayKey } from '@tally/key-layout';
import { hash } from 'node:crypto';
import type { CompiledCounter, CompiledRules } from './compile';
import type { NormalizedEvent } from './event.schema';
import { RulesError } from './errors';

/** A day key holds for a whole 15-minute slot in every time zone (offsets are multiples of 15 minutes). */
const SLOT_MS = 15 * 60 * 1000;

/**
 * Per row pk, per sketch field (`<dayKey>|<metric code>`), the members a batch adds to the row's distinct-count
 * sketch: each an 8-byte hash of the dimension's value, as a latin1 string (one char per byte).
 */
export type DistinctAdds = Map<string, Map<string, Set<string>>>;

/** Bytes of a sketch member: the first 8 bytes of the value's SHA-256 (64 bits: a collision among 300 ids has odds about 2.4e-15). */
export const MEMBER_BYTES = 8;

/** The sketch member of a dimension value. */
export function distinctMember(value: string): string {
  // One-shot hash: the same digest as createHash's, without a Hash object per value.
  return hash('sha256', value, 'buffer').toString('latin1', 0, MEMBER_BYTES);
}

/**
 * The distinct-count side of a rollup: every event counted on a row whose entity has `distinct` metrics adds its
 * dimension's value (when present) to that row's sketch of the event's store-local day. Rows and days are the
 * counters' (rollup), so a sketch member always comes with counts on the same row and day.
 */
export function rollupDistinct(
  rules: CompiledRules,
  store: string,
  tz: string,
  events: readonly NormalizedEvent[],
  into: DistinctAdds = new Map(),
): DistinctAdds {
  const members = new Map<string, string>();
  // Per call: the pk prefix of each counter (`store#entity#`); events of a batch mostly share a 15-minute slot, so
  // the last one's day key is remembered (as in rollup).
  const prefixes = new Map<CompiledCounter, string>();
  let lastSlot = Number.NaN;
  let day = '';
  for (const e of events) {
    const spec = rules.eventTypes.get(e.type);
    if (!spec) throw new RulesError(`unknown event type ${JSON.stringify(e.type)}`);
    const dims = e.dims;
    for (const c of spec.counters) {
      if (c.distinct.length === 0) continue;
      let present = true;
      for (const d of c.needs) if (dims[d] === undefined) present = false;
      if (!present) continue;
      let pk: string;
      if (c.pkEntity === undefined) pk = store;
      else {
        let prefix = prefixes.get(c);
        if (prefix === undefined) prefixes.set(c, (prefix = `${store}#${c.pkEntity}#`));
        pk = c.keyDims.length === 1 ? prefix + dims[c.keyDims[0]!] : prefix + c.keyDims.map((d) => dims[d]).join('#');
      }
      for (const { attrMetric, dim } of c.distinct) {
        const value = dims[dim];
        if (value === undefined) continue;
        const slot = Math.floor(e.ts / SLOT_MS);
        if (slot !== lastSlot) {
          day = localDayKey(e.ts, tz);
          lastSlot = slot;
        }
        let member = members.get(value);
        if (member === undefined) members.set(value, (member = distinctMember(value)));
        let row = into.get(pk);
        if (!row) into.set(pk, (row = new Map()));
        const field = `${day}|${attrMetric}`;
        let set = row.get(field);
        if (!set) row.set(field, (set = new Set()));
        set.add(member);
      }
    }
  }
  return into;
}

/**
 * DistinctAdds flat, as the collector puts them in a job next to its `rows` (libs/queues FlatDistinct): per row, its
 * pk, its number of sketch fields, then (field `<dayKey>|<metric>`, members) pairs, the members as one base64
 * string of their MEMBER_BYTES-byte ids one after another (no JSON per visitor).
 */
export function flattenDistinct(adds: DistinctAdds): Array<string | number> {
  const out: Array<string | number> = [];
  for (const [pk, fields] of adds) {
    out.push(pk, fields.size);
    for (const [field, members] of fields) out.push(field, Buffer.from([...members].join(''), 'latin1').toString('base64'));
  }
  return out;
}

/** flattenDistinct's inverse, for a payload already checked (libs/queues checkFlatDistinct). */
export function unflattenDistinct(flat: ReadonlyArray<string | number>): DistinctAdds {
  const adds: DistinctAdds = new Map();
  let i = 0;
  while (i < flat.length) {
    const pk = String(flat[i]);
    const n = Number(flat[i + 1]);
    let row = adds.get(pk);
    if (!row) adds.set(pk, (row = new Map()));
    for (let j = i + 2; j < i + 2 + 2 * n; j += 2) {
      const field = String(flat[j]);
      const bytes = Buffer.from(String(flat[j + 1]), 'base64');
      let set = row.get(field);
      if (!set) row.set(field, (set = new Set()));
      for (let b = 0; b + MEMBER_BYTES <= bytes.length; b += MEMBER_BYTES) set.add(bytes.toString('latin1', b, b + MEMBER_BYTES));
    }
    i += 2 + 2 * n;
  }
  return adds;
}
