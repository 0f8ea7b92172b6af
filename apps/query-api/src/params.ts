import { ID_PATTERN, NAME_PATTERN } from '@tally/key-layout';
import { explicitRange, namedRange, resolveMetrics, type DateRange, type MetricRef } from '@tally/query';
import { fromUnits, type CompiledRules } from '@tally/schema';
import type { RangeName } from './common.schema';
import { badRequest, HttpProblem } from '@tally/http';

/** How request parameters (entity, ids, metrics, ranges) become rows, attributes and dates; values back to JSON. */

export const MAX_METRICS_PER_REQUEST = 50;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const ID_RULE = '1-128 characters of A-Z a-z 0-9 _ . : -';

/** Name of the entity whose key is empty (the store row); `store` always means it too. */
export function storeEntityOf(rules: CompiledRules): string | undefined {
  return Object.entries(rules.rules.entities).find(([, spec]) => spec.key.length === 0)?.[0];
}

function entitySpec(rules: CompiledRules, name: string, field: string) {
  const storeEntity = storeEntityOf(rules);
  const canonical = name === 'store' && storeEntity ? storeEntity : name;
  if (!NAME_PATTERN.test(canonical) || !Object.hasOwn(rules.rules.entities, canonical)) {
    const known = Object.keys(rules.rules.entities).join(', ');
    throw badRequest(field, `unknown entity ${JSON.stringify(name)}; known: ${known}`);
  }
  return { name: canonical, spec: rules.rules.entities[canonical]!, isStore: canonical === storeEntity };
}

export interface EntityRef {
  /** Entity name in the rules (`store`, `product`, …). */
  entity: string;
  /** The key value (`P1`), or the store id for the store row. */
  id: string;
  pk: string;
}

/**
 * `store`, `store:<own store>`, or `<entity>:<id>` (single-dimension entities) → the row of the key's store.
 * `store:<another store>` is 404: a key never reads another store.
 */
export function parseEntity(rules: CompiledRules, store: string, raw: string): EntityRef {
  const colon = raw.indexOf(':');
  const name = colon < 0 ? raw : raw.slice(0, colon);
  const id = colon < 0 ? undefined : raw.slice(colon + 1);
  const { name: entity, spec, isStore } = entitySpec(rules, name, 'entity');
  if (isStore) {
    if (id !== undefined && id !== store) throw new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `store ${JSON.stringify(id)} is not the store of this API key`, { field: 'entity' });
    return { entity, id: store, pk: store };
  }
  if (spec.key.length !== 1) throw badRequest('entity', `entity ${entity} is keyed by ${spec.key.length} dimensions (${spec.key.join(', ')}); this API reads single-dimension entities`);
  if (id === undefined || id === '') throw badRequest('entity', `entity ${entity} needs an id: entity=${entity}:<id>`);
  if (!ID_PATTERN.test(id)) throw badRequest('entity', `id ${JSON.stringify(id)} of entity ${entity} must be ${ID_RULE}`);
  return { entity, id, pk: rules.pkOf(store, entity, [id]) };
}

/** `entity=product&ids=P1,P2` (or `entity=store`, no ids) → rows of the key's store, duplicates dropped, order kept. */
export function parseEntityIds(rules: CompiledRules, store: string, entityRaw: string, idsRaw: string | string[] | undefined, max: number): EntityRef[] {
  const { name: entity, spec, isStore } = entitySpec(rules, entityRaw, 'entity');
  const ids = splitList(idsRaw);
  if (isStore) {
    for (const id of ids) if (id !== store) throw new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `store ${JSON.stringify(id)} is not the store of this API key`, { field: 'ids' });
    return [{ entity, id: store, pk: store }];
  }
  if (spec.key.length !== 1) throw badRequest('entity', `entity ${entity} is keyed by ${spec.key.length} dimensions (${spec.key.join(', ')}); this API reads single-dimension entities`);
  if (ids.length === 0) throw badRequest('ids', `name at least one ${entity} id: ids=<id>,<id>,…`);
  const unique = [...new Set(ids)];
  if (unique.length > max) throw badRequest('ids', `${unique.length} ids; at most ${max} per request`);
  for (const id of unique) if (!ID_PATTERN.test(id)) throw badRequest('ids', `id ${JSON.stringify(id)} must be ${ID_RULE}`);
  return unique.map((id) => ({ entity, id, pk: rules.pkOf(store, entity, [id]) }));
}

function splitList(raw: string | string[] | undefined): string[] {
  if (raw === undefined) return [];
  const parts = (Array.isArray(raw) ? raw : [raw]).flatMap((s) => s.split(','));
  return parts.map((s) => s.trim()).filter((s) => s.length > 0);
}

/** Metrics counted with a `by` dimension (ProductViews by product), and metrics counted without one. */
function keyedness(rules: CompiledRules, metric: string): { keyedBy: string[]; plain: boolean } {
  const keyedBy = new Set<string>();
  let plain = false;
  for (const t of rules.eventTypes.values()) {
    for (const c of t.counters) {
      if (c.metric !== metric) continue;
      if (c.by) keyedBy.add(c.by);
      else plain = true;
    }
  }
  return { keyedBy: [...keyedBy], plain };
}

/** The dimension a metric is keyed by (`product` for ProductViews), or null. */
export function keyedByOf(rules: CompiledRules, metric: string): string | null {
  const k = keyedness(rules, metric);
  return !k.plain && k.keyedBy.length > 0 ? k.keyedBy[0]! : null;
}

/** Checks one metric name (`ViewCount`, `ProductViews#P1`); a 400 points at `field`, or at `keyField` for the key. */
export function checkMetricName(rules: CompiledRules, name: string, field: string, keyField = field): { base: string; sub: string | undefined } {
  const hash = name.indexOf('#');
  const base = hash < 0 ? name : name.slice(0, hash);
  const sub = hash < 0 ? undefined : name.slice(hash + 1);
  if (!NAME_PATTERN.test(base) || !Object.hasOwn(rules.rules.metrics, base)) {
    throw badRequest(field, `unknown metric ${JSON.stringify(base)}; known: ${Object.keys(rules.rules.metrics).join(', ')}`);
  }
  const k = keyedness(rules, base);
  if (sub === undefined) {
    if (!k.plain && k.keyedBy.length > 0) throw badRequest(keyField, `metric ${base} is keyed by ${k.keyedBy.join('/')}: give a key, ${base}#<${k.keyedBy[0]}>`);
  } else {
    if (k.keyedBy.length === 0) throw badRequest(keyField, `metric ${base} is not keyed; ask for ${base} without a key`);
    if (!ID_PATTERN.test(sub)) throw badRequest(keyField, `key ${JSON.stringify(sub)} of metric ${base} must be ${ID_RULE}`);
  }
  return { base, sub };
}

/** `metrics=ViewCount,Revenue` → attribute refs, each checked; unset → `fallback`. */
export function parseMetrics(rules: CompiledRules, raw: string | string[] | undefined, fallback: () => string[]): MetricRef[] {
  const names = raw === undefined ? fallback() : [...new Set(splitList(raw))];
  if (names.length === 0) throw badRequest('metrics', 'name at least one metric, e.g. metrics=ViewCount,OrderCount');
  if (names.length > MAX_METRICS_PER_REQUEST) throw badRequest('metrics', `${names.length} metrics; at most ${MAX_METRICS_PER_REQUEST} per request`);
  for (const n of names) checkMetricName(rules, n, 'metrics');
  return resolveMetrics(rules, names);
}

/** The metrics counted on an entity's rows without a sub-key: the default of a series. */
export function plainMetricsOf(rules: CompiledRules, entity: string): string[] {
  const out = new Set<string>();
  for (const t of rules.eventTypes.values()) for (const c of t.counters) if (c.entity === entity && !c.by) out.add(c.metric);
  return [...out];
}

export interface RangeQuery {
  range?: RangeName | undefined;
  from?: string | undefined;
  to?: string | undefined;
}

/**
 * `range=<name>` or `from`+`to`, in the store's time zone → dates, or 'all' for allTime. Unset → `fallback`.
 * 400s name range, from or to (from after to, beyond 10 years, not a date).
 */
export function resolveRange(q: RangeQuery, timeZone: string, now: number, fallback: RangeName): { range: DateRange | 'all'; name: RangeName | null } {
  const explicit = q.from !== undefined || q.to !== undefined;
  if (q.range !== undefined && explicit) throw badRequest('range', 'give either range or from and to, not both');
  if (explicit) {
    if (q.from === undefined) throw badRequest('from', 'from is required with to (both YYYY-MM-DD)');
    if (q.to === undefined) throw badRequest('to', 'to is required with from (both YYYY-MM-DD)');
    return { range: explicitRange(q.from, q.to), name: null };
  }
  const name = q.range ?? fallback;
  return { range: name === 'allTime' ? 'all' : namedRange(name, timeZone, now), name };
}

/** A counter for JSON: counts as numbers (strings beyond 2^53), scaled metrics as exact decimal strings. */
export function formatValue(units: bigint, scale: number): number | string {
  if (scale > 0) return fromUnits(units, scale);
  return units <= MAX_SAFE && units >= -MAX_SAFE ? Number(units) : units.toString();
}

export function formatValues(rules: CompiledRules, values: Record<string, bigint>): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const [name, v] of Object.entries(values)) out[name] = formatValue(v, rules.scaleOf(baseOf(name)));
  return out;
}

export function baseOf(metricName: string): string {
  const hash = metricName.indexOf('#');
  return hash < 0 ? metricName : metricName.slice(0, hash);
}
