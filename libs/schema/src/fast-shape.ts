import { ID_PATTERN } from '@tally/key-layout';
import type { z } from 'zod';
import type { eventInputSchema } from './event.schema';

type EventShape = z.output<typeof eventInputSchema>;

const isPlainObject = (v: unknown): v is Record<string, unknown> => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
};

/**
 * The hot path of validateEvents: accepts exactly the events eventInputSchema accepts in their common form (a plain
 * object with only the known fields, well-typed), returning what zod would return, without zod's per-event cost.
 * Anything else returns undefined and goes through zod, which names the problem. A property test holds the two
 * in step (schema.test.ts).
 */
export function fastEventShape(raw: unknown): EventShape | undefined {
  if (!isPlainObject(raw)) return undefined;
  let n = 0;
  for (const k in raw) {
    if (!Object.hasOwn(raw, k)) return undefined;
    if (k !== 'type' && k !== 'ts' && k !== 'id' && k !== 'dims' && k !== 'value') return undefined;
    n++;
  }
  if (n !== Object.keys(raw).length) return undefined;
  const { type, ts, id, dims, value } = raw;
  if (typeof type !== 'string' || type.length < 1 || type.length > 64) return undefined;
  if (typeof ts === 'string') {
    if (ts.length < 1 || ts.length > 64) return undefined;
  } else if (typeof ts !== 'number' || !Number.isFinite(ts)) return undefined;
  if (id !== undefined && (typeof id !== 'string' || !ID_PATTERN.test(id))) return undefined;
  if (value !== undefined) {
    if (typeof value === 'string') {
      if (value.length > 64) return undefined;
    } else if (typeof value !== 'number' || !Number.isFinite(value)) return undefined;
  }
  if (dims !== undefined) {
    if (!isPlainObject(dims)) return undefined;
    for (const k in dims) {
      if (!Object.hasOwn(dims, k) || k.length > 64) return undefined;
      const v = dims[k];
      if (typeof v !== 'string' || v.length > 1024) return undefined;
    }
  }
  // Well-formed with dims: the object itself is what zod would return (no copy per event on the hot path).
  if (dims !== undefined) return raw as EventShape;
  const out: EventShape = { type, ts, dims: {} };
  if (id !== undefined) out.id = id as string;
  if (value !== undefined) out.value = value as number | string;
  return out;
}
