import { localDayKey } from '@tally/key-layout';

const SLOT_MS = 15 * 60 * 1000;
import type { CompiledCounter, CompiledRules } from './compile';
import { toUnits } from './decimal';
import type { NormalizedEvent } from './event.schema';
import { RulesError } from './errors';

/** Per row pk, per bucket field (`<dayKey>|<metric>`), the integer delta. */
export type RowDeltas = Map<string, Map<string, number | bigint>>;

function add(deltas: RowDeltas, pk: string, field: string, delta: number | bigint): void {
  let row = deltas.get(pk);
  if (!row) deltas.set(pk, (row = new Map()));
  const prev = row.get(field);
  if (prev === undefined) row.set(field, delta);
  else if (typeof prev === 'number' && typeof delta === 'number' && Number.isSafeInteger(prev + delta)) row.set(field, prev + delta);
  else row.set(field, BigInt(prev) + BigInt(delta));
}

/**
 * Applies the rollup rules to a batch of validated events of one store: each event becomes counters on
 * entity rows, binned by the store-local day. Deltas of the batch are summed per row and field, so the Redis
 * apply does one HINCRBY per distinct (row, day, metric).
 * Throws RulesError for an event the rules cannot place (unknown type): the batch is then unprocessable.
 */
export function rollup(
  rules: CompiledRules,
  store: string,
  tz: string,
  events: readonly NormalizedEvent[],
  into: RowDeltas = new Map(),
): RowDeltas {
  // Per call: the pk prefix of each counter (`store#entity#`), so the loop only concatenates.
  const prefixes = new Map<CompiledCounter, string>();
  // Events of a batch mostly share a 15-minute slot: remember the last one's day key.
  let lastSlot = Number.NaN;
  let day = '';
  for (const e of events) {
    const spec = rules.eventTypes.get(e.type);
    if (!spec) throw new RulesError(`unknown event type ${JSON.stringify(e.type)}`);
    const slot = Math.floor(e.ts / SLOT_MS);
    if (slot !== lastSlot) {
      day = localDayKey(e.ts, tz);
      lastSlot = slot;
    }
    const dims = e.dims;
    for (const c of spec.counters) {
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
      const field = c.by === undefined ? `${day}|${c.attrMetric}` : `${day}|${c.attrMetric}#${dims[c.by]}`;
      let delta: number | bigint = 1;
      if (c.op === 'sum') {
        if (e.value === undefined) continue;
        const r = toUnits(e.value, c.scale);
        if (!r.ok) throw new RulesError(`value ${e.value}: ${r.reason}`);
        const n = Number(r.units);
        delta = Number.isSafeInteger(n) ? n : BigInt(r.units);
        if (delta === 0) continue;
      }
      add(into, pk, field, delta);
    }
  }
  return into;
}

/** Deltas as libs/buckets' APPLY script takes them (and an events job's `rows` carries them): per row, pk, field count, then (field, delta) pairs. */
export function flattenRows(deltas: RowDeltas): Array<string | number> {
  const out: Array<string | number> = [];
  for (const [pk, fields] of deltas) {
    out.push(pk, fields.size);
    for (const [field, delta] of fields) out.push(field, typeof delta === 'number' ? delta : delta.toString());
  }
  return out;
}
