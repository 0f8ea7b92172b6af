import { ID_PATTERN } from '@tally/key-layout';
import {
  checkCountedMetric,
  entityOf,
  ID_RULE,
  idOfRequest,
  keyedByPath,
  plainMetricsOf,
  resolveMetrics,
  type MetricRef,
} from '@tally/query';
import { fromUnits, parseMetricName, type CompiledRules } from '@tally/schema';
import { badRequest, HttpProblem } from '@tally/http';

/** How request parameters (entity, ids, metrics) become rows and attributes; values back to JSON. */

const MAX_METRICS_PER_REQUEST = 50;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export interface EntityRef {
  /** Entity name in the rules (`store`, `product`, …). */
  entity: string;
  /** The key value (`P1`), or the store id for the store row. */
  id: string;
  pk: string;
}

/** A 404 for a store that is not the key's: the same whether or not that store exists, so nothing of other tenants leaks. */
export const notOwnStore = (id: unknown, field: string) =>
  new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `store ${JSON.stringify(id)} is not the store of this API key`, { field });

function checkSingleDimension(entity: string, key: readonly string[]): void {
  if (key.length !== 1)
    throw badRequest(
      'entity',
      `entity ${entity} is keyed by ${key.length} dimensions (${key.join(', ')}); this API reads single-dimension entities`,
    );
}

/**
 * `store`, `store:<own store>`, or `<entity>:<id>` (single-dimension entities) → the row of the key's store.
 * `store:<another store>` is 404: a key never reads another store.
 */
export function parseEntity(rules: CompiledRules, store: string, raw: string): EntityRef {
  const colon = raw.indexOf(':');
  const name = colon < 0 ? raw : raw.slice(0, colon);
  const { name: entity, spec, isStore } = entityOf(rules, name, 'entity');
  const id = colon < 0 ? undefined : idOfRequest(rules, entity, raw.slice(colon + 1));
  if (isStore) {
    // `store:` names no store, another tenant's or not: 400, as `product:` is.
    if (id === '') throw badRequest('entity', 'entity=store: (an empty id) names no store; entity=store reads the store of the API key');
    if (id !== undefined && id !== store) throw notOwnStore(id, 'entity');
    return { entity, id: store, pk: store };
  }
  checkSingleDimension(entity, spec.key);
  if (id === undefined || id === '') throw badRequest('entity', `entity ${entity} needs an id: entity=${entity}:<id>`);
  if (!ID_PATTERN.test(id)) throw badRequest('entity', `id ${JSON.stringify(id)} of entity ${entity} must be ${ID_RULE}`);
  return { entity, id, pk: rules.pkOf(store, entity, [id]) };
}

/**
 * `entity=product&ids=P1,P2` (or `entity=store`, no ids) → rows of the key's store, duplicates dropped, order kept.
 * Ids are comma-separated lists, in one `ids` parameter or more. For an entity keyed by a path (page) a value that
 * starts with `/` is one path, commas and all (`ids=/shop/a,b` is the one page): give several as `ids=/a&ids=/b`.
 */
export function parseEntityIds(
  rules: CompiledRules,
  store: string,
  entityRaw: string,
  idsRaw: string | string[] | undefined,
  max: number,
): EntityRef[] {
  const colon = entityRaw.indexOf(':');
  if (colon > 0 && Object.hasOwn(rules.rules.entities, entityRaw.slice(0, colon))) {
    const [name, id] = [entityRaw.slice(0, colon), entityRaw.slice(colon + 1)];
    throw badRequest('entity', `entity takes the name alone here, the ids go in ids: entity=${name}&ids=${id}`);
  }
  const { name: entity, spec, isStore } = entityOf(rules, entityRaw, 'entity');
  const byPath = keyedByPath(rules, entity);
  const ids = splitList(idsRaw, byPath ? (v) => v.startsWith('/') : undefined).map((id) => idOfRequest(rules, entity, id));
  if (isStore) {
    const other = ids.find((id) => id !== store);
    if (other !== undefined) throw notOwnStore(other, 'ids');
    return [{ entity, id: store, pk: store }];
  }
  checkSingleDimension(entity, spec.key);
  if (ids.length === 0) throw badRequest('ids', `name at least one ${entity} id: ${byPath ? 'ids=<path>&ids=<path>…' : 'ids=<id>,<id>,…'}`);
  const unique = [...new Set(ids)];
  if (unique.length > max) throw badRequest('ids', `${unique.length} ids; at most ${max} per request`);
  for (const id of unique) if (!ID_PATTERN.test(id)) throw badRequest('ids', `id ${JSON.stringify(id)} must be ${ID_RULE}`);
  return unique.map((id) => ({ entity, id, pk: rules.pkOf(store, entity, [id]) }));
}

/** The values of a list parameter, each split on commas unless `whole` keeps it one value; blanks dropped. */
function splitList(raw: string | string[] | undefined, whole?: (value: string) => boolean): string[] {
  if (raw === undefined) return [];
  const parts = (Array.isArray(raw) ? raw : [raw]).flatMap((s) => (whole?.(s.trim()) ? [s] : s.split(',')));
  return parts.map((s) => s.trim()).filter((s) => s.length > 0);
}

/**
 * `metrics=ViewCount,Revenue` → attribute refs, each checked to be a metric `entity` counts (as the rules name it);
 * unset → the entity's unkeyed metrics.
 */
export function parseMetrics(rules: CompiledRules, entity: string, raw: string | string[] | undefined): MetricRef[] {
  const names = raw === undefined ? plainMetricsOf(rules, entity) : [...new Set(splitList(raw))];
  if (names.length === 0) throw badRequest('metrics', 'name at least one metric, e.g. metrics=ViewCount,OrderCount');
  if (names.length > MAX_METRICS_PER_REQUEST)
    throw badRequest('metrics', `${names.length} metrics; at most ${MAX_METRICS_PER_REQUEST} per request`);
  for (const name of names) checkCountedMetric(rules, entity, name, 'metrics');
  return resolveMetrics(rules, names, 'metrics');
}

/** A counter for JSON: counts as numbers (strings beyond 2^53), scaled metrics as exact decimal strings. */
export function formatValue(units: bigint, scale: number): number | string {
  if (scale > 0) return fromUnits(units, scale);
  return units <= MAX_SAFE && units >= -MAX_SAFE ? Number(units) : units.toString();
}

export function formatValues(rules: CompiledRules, values: Record<string, bigint>): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const [name, v] of Object.entries(values)) out[name] = formatValue(v, rules.scaleOf(parseMetricName(name).base));
  return out;
}
