import type { CompiledRules } from './compile';
import type { NormalizedEvent } from './event.schema';
import { MEMBER_BYTES, rollup, type DistinctAdds } from './rollup';

/** The distinct-count side of a rollup alone (rollup with `distinct`, its counts left aside). */
export function rollupDistinct(
  rules: CompiledRules,
  store: string,
  tz: string,
  events: readonly NormalizedEvent[],
  into: DistinctAdds = new Map(),
): DistinctAdds {
  rollup(rules, store, tz, events, new Map(), into);
  return into;
}

/**
 * DistinctAdds flat, as the collector puts them in a job next to its `rows` (libs/queues FlatDistinct): per row, its
 * pk, its number of sketch fields, then (field `<dayKey>|<metric>`, members) pairs, the members as one base64
 * string of their MEMBER_BYTES-byte ids one after another (no JSON per visitor).
 */
export function flattenDistinct(adds: DistinctAdds): Array<string | number> {
  const out: Array<string | number> = [];
  const push = (members: Set<string>, field: string) => {
    let ids = '';
    members.forEach((m) => (ids += m));
    // btoa: the base64 of a latin1 string (the same text as Buffer's), without a Buffer per field.
    out.push(field, btoa(ids));
  };
  adds.forEach((fields, pk) => {
    out.push(pk, fields.size);
    fields.forEach(push);
  });
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
