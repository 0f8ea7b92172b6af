import { hash } from 'node:crypto';
import { entityPk, parsePk, RESERVED_ATTRS, reservedAttrOf } from '@tally/key-layout';
import { RulesError } from './errors';
import { formatMetricName, parseMetricName } from './metric-name';
import { rulesSchema, type Counter, type DimensionFormat, type FlushPolicy, type Rules, type RulesInput } from './rules.schema';

export interface CompiledCounter extends Counter {
  /** Dimensions that must be present for the counter to apply (entity key + `by`). */
  needs: string[];
  /** Name written to DynamoDB/Redis: the metric's short code when it has one. */
  attrMetric: string;
  /** Key dims of the entity, in order. */
  keyDims: string[];
  /** Entity name in the pk; undefined for the store row. */
  pkEntity: string | undefined;
  scale: number;
  /** The entity's distinct-count metrics: attribute code and the dimension counted (rules `distinct`). */
  distinct: ReadonlyArray<{ attrMetric: string; dim: string }>;
}

export interface CompiledEventType {
  name: string;
  dims: Record<string, 'required' | 'optional'>;
  value: 'required' | 'optional' | 'forbidden';
  counters: CompiledCounter[];
  /** Scale of the type's sum counters, which share one (the decimals a value may have); 0 without a sum counter. */
  valueScale: number;
  hasSum: boolean;
}

export interface CompiledRules {
  readonly rules: Rules;
  /**
   * SHA-256 (16 hex digits) of the rules in a canonical form (object keys sorted): two processes count alike only
   * when their fingerprints are equal. The aggregator publishes its own for @tally/client (libs/key-layout `rules`).
   */
  readonly fingerprint: string;
  readonly eventTypes: ReadonlyMap<string, CompiledEventType>;
  /** `ViewCount` -> `v` (or the name when the metric has no code); with a sub-key: `pv#P1`. */
  attrMetric(metric: string, sub?: string): string;
  /** `pv#P1` -> { metric: 'ProductViews', sub: 'P1' }; undefined for unknown names. */
  parseAttrMetric(attrMetric: string): { metric: string; sub?: string } | undefined;
  /** Entity name of a pk (`store` for the store row). */
  entityOfPk(pk: string): string | undefined;
  policyOfPk(pk: string): FlushPolicy;
  /** For a row of a ranked entity: the entity name and the member (its key value) in daily rankings. */
  rankOfPk(pk: string): { entity: string; member: string } | undefined;
  /** Scale (decimal places) of a metric. */
  scaleOf(metric: string): number;
  /** The pk of an entity given its key values. */
  pkOf(store: string, entity: string, keyValues: readonly string[]): string;
  /** Distinct-count metrics of an entity (rules `distinct`): metric name, attribute code, dimension. */
  distinctOf(entity: string): ReadonlyArray<{ metric: string; attrMetric: string; dim: string }>;
  /** How a dimension's values are written (`path`: keyed by their base64url encoding); `id` for any other. */
  dimFormat(dim: string): DimensionFormat;
  /**
   * The entities whose rows are keyed by a visitor id: each entity whose key is the visitor's dimension alone (the one
   * key dimension of the `visitor` entity, `visitor` when the rules have no such entity), in the rules' order. Their
   * rows are the ones erasing a visitor erases (libs/tenants eraseVisitor: their pk is known from the id alone).
   */
  readonly visitorEntities: ReadonlySet<string>;
  /**
   * The entities whose key includes the visitor's dimension (that of visitorEntities): visitorEntities, then those
   * keyed by it and another dimension (`key: [visitor, product]`), in the rules' order. Their rows hold a visitor's
   * history: a store's historyMonths expires their items (a per-item TTL needs none of the other key values:
   * libs/tenants visitorExpiry, restampRetention) and cuts their queries (libs/query retainedRange).
   */
  readonly visitorKeyedEntities: ReadonlySet<string>;
  /**
   * Where else the rules keep a visitor's data, out of reach of erasure (loadRulesOrExit warns of each): an entity keyed
   * by the visitor's dimension and another (its other key values are not known; its items expire under historyMonths
   * all the same), and a counter `by` the visitor's dimension on the rows of an entity not keyed by it (neither erased
   * nor expired). `rule` names it (`entities.basket`, `events.view.counters.4`), `entity` is the entity whose rows hold
   * the data, `why` says what is kept.
   */
  readonly visitorDataOutOfReach: ReadonlyArray<VisitorDataOutOfReach>;
}

/** A rule that keeps a visitor's data where erasure cannot reach it (CompiledRules.visitorDataOutOfReach). */
export interface VisitorDataOutOfReach {
  rule: string;
  entity: string;
  why: string;
}

/** Validates rules (zod, then cross-references) and precomputes what the hot paths need. */
export function compileRules(input: RulesInput | unknown): CompiledRules {
  // JSON.parse makes `__proto__` an own key, which zod's records drop without a word (its counters would vanish).
  const proto = protoKeyPath(input, []);
  if (proto !== undefined) throw new RulesError(`rollup rules: ${proto}: "__proto__" is not allowed as a name`);
  const parsed = rulesSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    // A bad record key (`entities.constructor`) is an `invalid_key` issue whose own issues say what is wrong with it.
    const reason = issue.code === 'invalid_key' ? (issue.issues[0]?.message ?? issue.message) : issue.message;
    throw new RulesError(`rollup rules: ${issue.path.join('.') || '(root)'}: ${reason}`);
  }
  const rules = parsed.data;

  const codeToMetric = new Map<string, string>();
  for (const [metric, spec] of Object.entries(rules.metrics)) {
    const code = spec.code ?? metric;
    // The code (or the name) is an attribute name of its own on TOTAL (`v`): never one the items use themselves.
    const reserved = reservedAttrOf(code);
    if (reserved !== undefined) {
      throw new RulesError(
        `rollup rules: metrics.${metric}: attribute name "${code}" would write to the reserved item attribute "${reserved}" ` +
          `(reserved: ${[...RESERVED_ATTRS].join(', ')}); give the metric another ${spec.code === undefined ? 'name or a code' : 'code'}`,
      );
    }
    const clash = codeToMetric.get(code);
    if (clash) throw new RulesError(`rollup rules: metrics.${metric}: attribute name "${code}" is also used by ${clash}`);
    codeToMetric.set(code, metric);
  }

  let storeEntity: string | undefined;
  for (const [entity, spec] of Object.entries(rules.entities)) {
    // Queries take `store` for the entity with an empty key (libs/query entityOf): a keyed `store` could not be asked.
    if (entity === 'store' && spec.key.length > 0)
      throw new RulesError(
        `rollup rules: entities.store: the name store stands for the store row (an empty key) in queries; give this entity another name`,
      );
    if (spec.rank && spec.key.length !== 1)
      throw new RulesError(`rollup rules: entities.${entity}: rank needs a key of exactly one dimension`);
    if (spec.key.length === 0) {
      if (storeEntity)
        throw new RulesError(`rollup rules: entities.${entity}: only one entity may have an empty key (${storeEntity} has one)`);
      storeEntity = entity;
    }
  }

  const distinctByEntity = new Map<string, Array<{ metric: string; attrMetric: string; dim: string }>>();
  const countedMetrics = new Set(Object.values(rules.events).flatMap((e) => e.counters.map((c) => c.metric)));
  for (const [entity, spec] of Object.entries(rules.entities)) {
    const list: Array<{ metric: string; attrMetric: string; dim: string }> = [];
    for (const [metric, dim] of Object.entries(spec.distinct)) {
      const m = Object.hasOwn(rules.metrics, metric) ? rules.metrics[metric] : undefined;
      const where = `rollup rules: entities.${entity}.distinct.${metric}`;
      if (!m) throw new RulesError(`${where}: unknown metric "${metric}"`);
      if (m.scale !== 0) throw new RulesError(`${where}: a distinct count needs a metric with scale 0 (${metric} has ${m.scale})`);
      if (countedMetrics.has(metric))
        throw new RulesError(`${where}: ${metric} is also a counter's metric; a distinct count needs a metric of its own`);
      // Only the events counted on the entity's rows add to its sketches: without the dimension (a typo) it reads 0.
      const declared = Object.values(rules.events).some((e) => Object.hasOwn(e.dims, dim) && e.counters.some((c) => c.entity === entity));
      if (!declared)
        throw new RulesError(`${where}: no event type counting on ${entity} declares dimension "${dim}" (it would count nothing)`);
      list.push({ metric, attrMetric: m.code ?? metric, dim });
    }
    distinctByEntity.set(entity, list);
  }

  const eventTypes = new Map<string, CompiledEventType>();
  for (const [type, spec] of Object.entries(rules.events)) {
    const seen = new Map<string, number>();
    let sumScale: { scale: number; at: number } | undefined;
    const counters: CompiledCounter[] = spec.counters.map((c, i) => {
      const where = `events.${type}.counters.${i}`;
      const entity = Object.hasOwn(rules.entities, c.entity) ? rules.entities[c.entity] : undefined;
      if (!entity) throw new RulesError(`rollup rules: ${where}: unknown entity "${c.entity}"`);
      const metric = Object.hasOwn(rules.metrics, c.metric) ? rules.metrics[c.metric] : undefined;
      if (!metric) throw new RulesError(`rollup rules: ${where}: unknown metric "${c.metric}"`);
      const needs = [...entity.key, ...(c.by ? [c.by] : [])];
      for (const d of needs) {
        if (!Object.hasOwn(spec.dims, d))
          throw new RulesError(`rollup rules: ${where}: dimension "${d}" is not declared in events.${type}.dims`);
      }
      // The same row field twice: every event of the type would be counted twice.
      const same = JSON.stringify([c.entity, c.metric, c.by ?? null]);
      const first = seen.get(same);
      if (first !== undefined)
        throw new RulesError(
          `rollup rules: ${where}: repeats counters.${first} (entity ${c.entity}, metric ${c.metric}${c.by ? `, by ${c.by}` : ''}): every event would be counted twice`,
        );
      seen.set(same, i);
      if (c.op === 'sum' && spec.value === 'forbidden') {
        throw new RulesError(`rollup rules: ${where}: a sum counter needs events.${type}.value to be required or optional`);
      }
      if (c.op === 'count' && metric.scale !== 0) {
        throw new RulesError(`rollup rules: ${where}: count counters need a metric with scale 0 (${c.metric} has ${metric.scale})`);
      }
      // One value per event, checked at the edge against one scale: a sum of another scale could refuse it later,
      // in the rollup, failing the whole batch.
      if (c.op === 'sum') {
        if (sumScale === undefined) sumScale = { scale: metric.scale, at: i };
        else if (metric.scale !== sumScale.scale)
          throw new RulesError(
            `rollup rules: ${where}: the sum counters of an event type must share one scale (${c.metric} has ${metric.scale}, ` +
              `counters.${sumScale.at}'s metric ${spec.counters[sumScale.at]!.metric} has ${sumScale.scale})`,
          );
      }
      return {
        ...c,
        needs,
        attrMetric: metric.code ?? c.metric,
        keyDims: entity.key,
        pkEntity: entity.key.length === 0 ? undefined : c.entity,
        scale: metric.scale,
        distinct: distinctByEntity.get(c.entity)!.map(({ attrMetric, dim }) => ({ attrMetric, dim })),
      };
    });
    eventTypes.set(type, {
      name: type,
      dims: spec.dims,
      value: spec.value,
      counters,
      valueScale: sumScale?.scale ?? 0,
      hasSum: sumScale !== undefined,
    });
  }

  const { visitorEntities, visitorKeyedEntities, visitorDataOutOfReach } = visitorData(rules);
  const metricOf = (metric: string) => (Object.hasOwn(rules.metrics, metric) ? rules.metrics[metric] : undefined);
  const entitySpec = (entity: string) => (Object.hasOwn(rules.entities, entity) ? rules.entities[entity] : undefined);
  const attrMetric = (metric: string, sub?: string) => formatMetricName(metricOf(metric)?.code ?? metric, sub);

  return {
    rules,
    fingerprint: hash('sha256', canonicalJson(rules)).slice(0, 16),
    eventTypes,
    attrMetric,
    parseAttrMetric(name) {
      const { base, sub } = parseMetricName(name);
      const metric = codeToMetric.get(base);
      if (!metric) return undefined;
      return sub === undefined ? { metric } : { metric, sub };
    },
    entityOfPk(pk) {
      const { entity } = parsePk(pk);
      if (entity === undefined) return storeEntity;
      return entitySpec(entity) ? entity : undefined;
    },
    policyOfPk(pk) {
      const name = this.entityOfPk(pk);
      const spec = name ? entitySpec(name) : undefined;
      return spec?.flush ?? { kind: 'bucket' };
    },
    rankOfPk(pk) {
      const { entity, keyValues } = parsePk(pk);
      if (entity === undefined || keyValues.length !== 1 || !entitySpec(entity)?.rank) return undefined;
      return { entity, member: keyValues[0]! };
    },
    scaleOf(metric) {
      return metricOf(metric)?.scale ?? 0;
    },
    dimFormat(dim) {
      return Object.hasOwn(rules.dimensions, dim) ? rules.dimensions[dim]!.format : 'id';
    },
    pkOf(store, entity, keyValues) {
      const spec = entitySpec(entity);
      if (!spec) throw new RulesError(`unknown entity "${entity}"`);
      return spec.key.length === 0 ? store : entityPk(store, entity, keyValues);
    },
    distinctOf(entity) {
      return distinctByEntity.get(entity) ?? [];
    },
    visitorEntities,
    visitorKeyedEntities,
    visitorDataOutOfReach,
  };
}

/**
 * The entities keyed by the visitor alone (CompiledRules.visitorEntities), those keyed by it and maybe others
 * (visitorKeyedEntities), and the rules that keep a visitor's data out of reach of erasure (visitorDataOutOfReach). A
 * counter `by` the visitor on an entity keyed by the visitor and another dimension is not listed apart: the entity is.
 */
function visitorData(rules: Rules): Pick<CompiledRules, 'visitorEntities' | 'visitorKeyedEntities' | 'visitorDataOutOfReach'> {
  const entities = Object.entries(rules.entities);
  const own = entities.find(([name]) => name === 'visitor')?.[1].key;
  const dim = own?.length === 1 ? own[0]! : 'visitor';
  const visitorEntities = new Set(entities.filter(([, spec]) => spec.key.length === 1 && spec.key[0] === dim).map(([name]) => name));
  const keyedWithOthers = entities.filter(([, spec]) => spec.key.length > 1 && spec.key.includes(dim));
  const visitorKeyedEntities = new Set([...visitorEntities, ...keyedWithOthers.map(([name]) => name)]);
  const outOfReach: VisitorDataOutOfReach[] = keyedWithOthers.map(([entity, spec]) => ({
    rule: `entities.${entity}`,
    entity,
    why:
      `keyed by ${dim} and ${spec.key.filter((d) => d !== dim).join(' and ')} (key [${spec.key.join(', ')}]): a visitor's rows ` +
      `of it are not erased with the visitor (a store's historyMonths expires them)`,
  }));
  for (const [type, spec] of Object.entries(rules.events)) {
    for (const [i, c] of spec.counters.entries()) {
      if (c.by !== dim || visitorKeyedEntities.has(c.entity)) continue;
      outOfReach.push({
        rule: `events.${type}.counters.${i}`,
        entity: c.entity,
        why: `counts ${c.metric} by ${dim} on ${c.entity} rows: a visitor's counts there are neither erased with the visitor nor expired by a store's historyMonths`,
      });
    }
  }
  return { visitorEntities, visitorKeyedEntities, visitorDataOutOfReach: outOfReach };
}

/**
 * Where `v` has an own `__proto__` key (`events.__proto__`), if anywhere in the depth rules have (deeper is no rule:
 * zod refuses it).
 */
function protoKeyPath(v: unknown, path: string[]): string | undefined {
  if (v === null || typeof v !== 'object' || path.length > 8) return undefined;
  if (Object.hasOwn(v, '__proto__')) return [...path, '__proto__'].join('.');
  for (const [k, x] of Object.entries(v)) {
    const found = protoKeyPath(x, [...path, k]);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** JSON with every object's keys sorted, so that the same rules written in another order give the same text. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    return `{${entries
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
