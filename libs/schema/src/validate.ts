import { daysInMonth, ID_PATTERN } from '@tally/key-layout';
import type { CompiledRules } from './compile';
import { fromUnits, toUnits } from './decimal';
import { eventInputSchema, type NormalizedEvent } from './event.schema';
import { fastEventShape } from './fast-shape';
import { normalizeDimValue } from './dimension-value';

export interface EventError {
  /** Index of the event in the request. */
  index: number;
  /** `type`, `ts`, `dims.product`, `value`, … */
  field: string;
  reason: string;
}

export interface ValidationLimits {
  now: number;
  /** Events stamped later than now + this are refused. */
  clockSkewMs: number;
  /** Events older than now - this are refused. */
  latenessMs: number;
}

export interface ValidationResult {
  events: NormalizedEvent[];
  /** For each accepted event, its index in the input. */
  acceptedIndexes: number[];
  errors: EventError[];
}

/** An event with more dims than this (or than the widest event type declares) is refused with one error. */
const MAX_DIMS = 64;

/** A decimal in its one spelling: digits with no sign, exponent, leading zero (but `0.…`) or trailing zero of a fraction. */
const CANONICAL_DECIMAL = /^(?:0|[1-9]\d*)(?:\.\d*[1-9])?$/;

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/;

export function parseTimestamp(ts: string | number): number | undefined {
  if (typeof ts === 'number') return Number.isSafeInteger(ts) ? ts : undefined;
  if (/^\d{1,15}$/.test(ts)) return Number(ts);
  if (!ISO.test(ts)) return undefined;
  // Date.parse rolls a day that does not exist over (2026-11-31 is read as 2026-12-01): check the calendar first.
  const year = Number(ts.slice(0, 4));
  const month = Number(ts.slice(5, 7));
  const day = Number(ts.slice(8, 10));
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  const ms = Date.parse(ts);
  return Number.isNaN(ms) ? undefined : ms;
}

/**
 * A number out of the window that would be in it in another unit is most likely epoch seconds (or microseconds) sent
 * for milliseconds: say so, since "older than the lateness horizon" alone points nowhere near the mistake.
 */
function unitHint(raw: string | number, asMs: number, unit: string, limits: ValidationLimits): string {
  if (typeof raw === 'string' && !/^\d+$/.test(raw)) return '';
  if (asMs < limits.now - limits.latenessMs || asMs > limits.now + limits.clockSkewMs) return '';
  return ` (as epoch ${unit} it would be ${new Date(Math.round(asMs)).toISOString()}; ts takes epoch milliseconds)`;
}

/** What validateOne needs of an event type's dims, computed once per compiled type. */
interface DimsInfo {
  required: string[];
  allowed: string;
  /** Whether a dimension of the type is a `path` (normalized to its key). */
  paths: boolean;
}
const dimsInfo = new WeakMap<object, DimsInfo>();
function dimsOf(rules: CompiledRules, spec: { dims: Record<string, string> }): DimsInfo {
  let info = dimsInfo.get(spec);
  if (!info) {
    info = {
      required: Object.entries(spec.dims)
        .filter(([, need]) => need === 'required')
        .map(([name]) => name),
      allowed: Object.keys(spec.dims).join(', ') || 'none',
      paths: Object.keys(spec.dims).some((d) => rules.dimFormat(d) === 'path'),
    };
    dimsInfo.set(spec, info);
  }
  return info;
}

const UNKNOWN_FIELD = `unknown field; known: ${Object.keys(eventInputSchema.shape).join(', ')}`;

/** For an unknown dimension's error: the event types that do take it, as a hint (` (product is a dimension of view, …)`). */
function elsewhere(rules: CompiledRules, dim: string): string {
  const types = [...rules.eventTypes].filter(([, spec]) => Object.hasOwn(spec.dims, dim)).map(([type]) => type);
  return types.length ? ` (${dim} is a dimension of ${types.join(', ')})` : '';
}

/** Records an error of event `index` (no closure per event: this is the hot path). */
function fail(errors: EventError[], index: number, field: string, reason: string): undefined {
  errors.push({ index, field, reason });
  return undefined;
}

/**
 * Validates each event against the event schema and the rollup rules. Every problem is reported with the
 * event's index, the field and the reason; valid events come back normalized (a new object, which keeps the input's
 * dims object unless a value was normalized).
 */
export function validateEvents(rules: CompiledRules, input: unknown[], limits: ValidationLimits): ValidationResult {
  const result: ValidationResult = { events: [], acceptedIndexes: [], errors: [] };
  let maxDims = MAX_DIMS;
  for (const spec of rules.eventTypes.values()) maxDims = Math.max(maxDims, Object.keys(spec.dims).length);
  for (let index = 0; index < input.length; index++) {
    const before = result.errors.length;
    const ev = validateOne(rules, input[index], limits, index, result.errors, maxDims);
    if (ev && result.errors.length === before) {
      result.events.push(ev);
      result.acceptedIndexes.push(index);
    }
  }
  return result;
}

function validateOne(
  rules: CompiledRules,
  raw: unknown,
  limits: ValidationLimits,
  index: number,
  errors: EventError[],
  maxDims: number,
): NormalizedEvent | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail(errors, index, '(event)', 'must be a JSON object');
  // JSON.parse makes `__proto__` an own key; zod's record would drop it silently, so refuse it by name.
  const rawDims = (raw as Record<string, unknown>)['dims'];
  if (typeof rawDims === 'object' && rawDims !== null && Object.hasOwn(rawDims, '__proto__')) {
    return fail(errors, index, 'dims.__proto__', 'is not allowed as a dimension name');
  }
  // A flood of dims (a crawler, a fuzzer) is one error, found before any per-key work.
  if (typeof rawDims === 'object' && rawDims !== null) {
    let count = 0;
    for (const k in rawDims) if (Object.hasOwn(rawDims, k) && ++count > maxDims) break;
    if (count > maxDims) return fail(errors, index, 'dims', `has more than ${maxDims} dimensions; no event type declares that many`);
  }
  let e = fastEventShape(raw);
  if (e === undefined) {
    const parsed = eventInputSchema.safeParse(raw);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const field = issue.code === 'unrecognized_keys' ? issue.keys.join(',') : issue.path.join('.') || '(event)';
        fail(errors, index, field, issue.code === 'unrecognized_keys' ? UNKNOWN_FIELD : issue.message);
      }
      return undefined;
    }
    e = parsed.data;
  }
  const spec = rules.eventTypes.get(e.type);
  if (!spec)
    return fail(errors, index, 'type', `unknown event type ${JSON.stringify(e.type)}; known: ${[...rules.eventTypes.keys()].join(', ')}`);

  const ts = parseTimestamp(e.ts);
  if (ts === undefined)
    fail(errors, index, 'ts', 'must be an ISO-8601 timestamp with a zone (e.g. 2023-05-03T10:15:00Z) or epoch milliseconds');
  else if (ts > limits.now + limits.clockSkewMs)
    fail(
      errors,
      index,
      'ts',
      `is more than ${limits.clockSkewMs / 1000}s in the future${unitHint(e.ts, ts / 1000, 'microseconds', limits)}`,
    );
  else if (ts < limits.now - limits.latenessMs)
    fail(
      errors,
      index,
      'ts',
      `is older than the lateness horizon of ${Math.round(limits.latenessMs / 86_400_000)} days${unitHint(e.ts, ts * 1000, 'seconds', limits)}`,
    );

  const info = dimsOf(rules, spec);
  const given = e.dims;
  // The event's own dims unless a value is normalized (a path to its key): no copy per event on the hot path.
  let dims: Record<string, string> = given;
  for (const name in given) {
    const value = given[name]!;
    if (!Object.hasOwn(spec.dims, name)) {
      fail(errors, index, `dims.${name}`, `unknown dimension for type ${e.type}; allowed: ${info.allowed}${elsewhere(rules, name)}`);
    } else if (!info.paths && ID_PATTERN.test(value)) continue;
    else {
      const v = normalizeDimValue(rules, name, value);
      if (!v.ok) fail(errors, index, `dims.${name}`, v.reason);
      else if (v.value !== value) {
        if (dims === given) dims = { ...given };
        dims[name] = v.value;
      }
    }
  }
  for (const name of info.required) {
    if (!Object.hasOwn(given, name)) fail(errors, index, `dims.${name}`, 'is required');
  }

  let value: string | undefined;
  if (e.value !== undefined) {
    if (spec.value === 'forbidden') fail(errors, index, 'value', `is not allowed for type ${e.type}`);
    else {
      const r = toUnits(e.value, spec.valueScale);
      if (!r.ok) fail(errors, index, 'value', r.reason);
      else {
        // One spelling per value (`0.10`, `1e-1` and 0.1 are `0.1`), as the Idempotency-Key fingerprint compares it:
        // the text as given when it is that spelling already (a whole JSON number, tested first: the common case and
        // the cheapest), else from the units.
        const text = typeof e.value === 'number' ? String(e.value) : e.value.trim();
        value = Number.isInteger(e.value) || CANONICAL_DECIMAL.test(text) ? text : fromUnits(r.units, spec.valueScale);
      }
    }
  } else if (spec.value === 'required') fail(errors, index, 'value', 'is required');

  if (ts === undefined) return undefined;
  const out: NormalizedEvent = { type: e.type, ts, dims };
  if (e.id !== undefined) out.id = e.id;
  if (value !== undefined) out.value = value;
  return out;
}
