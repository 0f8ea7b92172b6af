import { localDayKey } from '@tally/key-layout';
import { createHash } from 'node:crypto';
import type { CompiledRules } from './compile';
import type { NormalizedEvent } from './event.schema';
import { RulesError } from './errors';

/**
 * Per row pk, per sketch field (`<dayKey>|<metric code>`), the members a batch adds to the row's distinct-count
 * sketch: each an 8-byte hash of the dimension's value, as a latin1 string (one char per byte).
 */
export type DistinctAdds = Map<string, Map<string, Set<string>>>;

/** Bytes of a sketch member: the first 8 bytes of the value's SHA-256 (64 bits: a collision among 300 ids has odds about 2.4e-15). */
export const MEMBER_BYTES = 8;

/** The sketch member of a dimension value. */
export function distinctMember(value: string): string {
  return createHash('sha256').update(value).digest().toString('latin1', 0, MEMBER_BYTES);
}

/**
 * The distinct-count side of a rollup: every event counted on a row whose entity has `distinct` metrics adds its
 * dimension's value (when present) to that row's sketch of the event's store-local day. Rows and days are the
 * counters' (rollup), so a sketch member always comes with counts on the same row and day.
 */
export function rollupDistinct(rules: CompiledRules, store: string, tz: string, events: readonly NormalizedEvent[], into: DistinctAdds = new Map()): DistinctAdds {
  const members = new Map<string, string>();
  for (const e of events) {
    const spec = rules.eventTypes.get(e.type);
    if (!spec) throw new RulesError(`unknown event type ${JSON.stringify(e.type)}`);
    let day: string | undefined;
    for (const c of spec.counters) {
      if (c.distinct.length === 0) continue;
      if (c.needs.some((d) => e.dims[d] === undefined)) continue;
      const pk = c.pkEntity === undefined ? store : `${store}#${c.pkEntity}#${c.keyDims.map((d) => e.dims[d]).join('#')}`;
      for (const { attrMetric, dim } of c.distinct) {
        const value = e.dims[dim];
        if (value === undefined) continue;
        day ??= localDayKey(e.ts, tz);
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
