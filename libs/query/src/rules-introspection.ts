import { decodeKeyValue, ID_PATTERN, NAME_PATTERN } from '@tally/key-layout';
import { normalizeDimValue, parseMetricName, type CompiledRules, type MetricName } from '@tally/schema';
import { QueryError } from './errors';

/** What the compiled rules tell a query: which entity is the store row, which metrics are keyed, what is ranked. */

/** The characters of an entity id or a metric key, for error messages. */
export const ID_RULE = '1-128 characters of A-Z a-z 0-9 _ . : -';

/** Name of the entity whose key is empty (the store row); `store` always means it too. */
export function storeEntityOf(rules: CompiledRules): string | undefined {
  return Object.entries(rules.rules.entities).find(([, spec]) => spec.key.length === 0)?.[0];
}

/** An entity of the rules by name (`store` names the store row); unknown → QueryError at `field`. */
export function entityOf(rules: CompiledRules, name: string, field: string) {
  const storeEntity = storeEntityOf(rules);
  const canonical = name === 'store' && storeEntity ? storeEntity : name;
  if (!NAME_PATTERN.test(canonical) || !Object.hasOwn(rules.rules.entities, canonical)) {
    const named = name.slice(0, Math.max(0, name.indexOf(':')));
    if (Object.hasOwn(rules.rules.entities, named)) throw new QueryError(field, `entity takes the name alone here (${named}), not ${name}`);
    const known = Object.keys(rules.rules.entities).join(', ');
    throw new QueryError(field, `unknown entity ${JSON.stringify(name)}; known: ${known}`);
  }
  return { name: canonical, spec: rules.rules.entities[canonical]!, isStore: canonical === storeEntity };
}

/** Entities that keep daily rankings (top lists). */
export function rankedEntitiesOf(rules: CompiledRules): string[] {
  return Object.entries(rules.rules.entities)
    .filter(([, s]) => s.rank)
    .map(([n]) => n);
}

/** Whether an entity is keyed by one `path` dimension (page): its ids are base64url keys of paths. */
export function keyedByPath(rules: CompiledRules, entity: string): boolean {
  const key = rules.rules.entities[entity]?.key ?? [];
  return key.length === 1 && rules.dimFormat(key[0]!) === 'path';
}

/** The path an id of a path-keyed entity stands for (`/shop/shoes`), for answers; undefined for other entities. */
export function pathOfId(rules: CompiledRules, entity: string, id: string): string | undefined {
  return keyedByPath(rules, entity) ? decodeKeyValue(id) : undefined;
}

/**
 * An id as a request gives it: for a path-keyed entity a path (`/shop/shoes`, starting with `/`) stands for its key;
 * anything else is taken as the id itself (then checked against the id rule).
 */
export function idOfRequest(rules: CompiledRules, entity: string, raw: string): string {
  if (!raw.startsWith('/') || !keyedByPath(rules, entity)) return raw;
  const v = normalizeDimValue(rules, rules.rules.entities[entity]!.key[0]!, raw);
  return v.ok ? v.value : raw;
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

/** The metrics counted on an entity's rows without a sub-key: the default of a series. */
export function plainMetricsOf(rules: CompiledRules, entity: string): string[] {
  const out = new Set<string>();
  for (const t of rules.eventTypes.values()) for (const c of t.counters) if (c.entity === entity && !c.by) out.add(c.metric);
  return [...out];
}

/**
 * Checks one metric name (`ViewCount`, `ProductViews#P1`) against the rules: a known metric, with a key exactly
 * when it is keyed. A QueryError points at `field`, or at `keyField` for the key.
 */
export function checkMetricName(rules: CompiledRules, name: string, field: string, keyField = field): MetricName {
  const { base, sub } = parseMetricName(name);
  if (!NAME_PATTERN.test(base) || !Object.hasOwn(rules.rules.metrics, base)) {
    throw new QueryError(field, `unknown metric ${JSON.stringify(base)}; known: ${Object.keys(rules.rules.metrics).join(', ')}`);
  }
  const k = keyedness(rules, base);
  if (sub === undefined) {
    if (!k.plain && k.keyedBy.length > 0)
      throw new QueryError(keyField, `metric ${base} is keyed by ${k.keyedBy.join('/')}: give a key, ${base}#<${k.keyedBy[0]}>`);
  } else {
    if (k.keyedBy.length === 0) throw new QueryError(keyField, `metric ${base} is not keyed; ask for ${base} without a key`);
    if (!ID_PATTERN.test(sub)) throw new QueryError(keyField, `key ${JSON.stringify(sub)} of metric ${base} must be ${ID_RULE}`);
  }
  return { base, sub };
}

/** A metric as an entity counts it, for messages: `ViewCount`, or `ProductViews#<product>` for one keyed by a dimension. */
const countedName = (metric: string, by: string | undefined) => (by === undefined ? metric : `${metric}#<${by}>`);

/** What an entity counts: its counters' metrics (with the dimension of a keyed one's key) and its distinct counts, in rules order. */
function countedOf(rules: CompiledRules, entity: string): Map<string, { metric: string; keyed: boolean }> {
  const out = new Map<string, { metric: string; keyed: boolean }>();
  for (const t of rules.eventTypes.values())
    for (const c of t.counters) if (c.entity === entity) out.set(countedName(c.metric, c.by), { metric: c.metric, keyed: !!c.by });
  for (const d of rules.distinctOf(entity)) out.set(d.metric, { metric: d.metric, keyed: false });
  return out;
}

/** The entities whose rows count `metric` (keyed or not, or as a distinct count), the store row named `store`, in rules order. */
export function entitiesCounting(rules: CompiledRules, metric: string): string[] {
  const storeEntity = storeEntityOf(rules);
  return Object.keys(rules.rules.entities)
    .filter((e) => [...countedOf(rules, e).values()].some((c) => c.metric === metric))
    .map((e) => (e === storeEntity ? 'store' : e));
}

/**
 * Checks a metric name as checkMetricName does, then that `entity` (as the rules name it, `store` resolved) counts
 * it: a counter of the entity counts it (keyed exactly when the name has a key), or it is one of the entity's
 * distinct counts. Otherwise a QueryError at `field` says what the entity counts: a metric the entity lacks would
 * read as 0 everywhere (a series of zeros, an empty top list, a segment rule `< 1` matching every visitor).
 */
export function checkCountedMetric(rules: CompiledRules, entity: string, name: string, field: string, keyField = field): MetricName {
  const m = checkMetricName(rules, name, field, keyField);
  const counted = countedOf(rules, entity);
  if (![...counted.values()].some((c) => c.metric === m.base && c.keyed === (m.sub !== undefined))) {
    const asked = countedName(m.base, m.sub === undefined ? undefined : keyedness(rules, m.base).keyedBy.join('/'));
    throw new QueryError(field, `entity ${entity} does not count ${asked}; it counts ${[...counted.keys()].join(', ') || 'nothing'}`);
  }
  return m;
}
