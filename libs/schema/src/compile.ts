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
  /** Largest scale among the type's sum counters (the decimals a value may have). */
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
}

/** Validates rules (zod, then cross-references) and precomputes what the hot paths need. */
export function compileRules(input: RulesInput | unknown): CompiledRules {
  const parsed = rulesSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RulesError(`rollup rules: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
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
      const m = rules.metrics[metric];
      const where = `rollup rules: entities.${entity}.distinct.${metric}`;
      if (!m) throw new RulesError(`${where}: unknown metric "${metric}"`);
      if (m.scale !== 0) throw new RulesError(`${where}: a distinct count needs a metric with scale 0 (${metric} has ${m.scale})`);
      if (countedMetrics.has(metric))
        throw new RulesError(`${where}: ${metric} is also a counter's metric; a distinct count needs a metric of its own`);
      list.push({ metric, attrMetric: m.code ?? metric, dim });
    }
    distinctByEntity.set(entity, list);
  }

  const eventTypes = new Map<string, CompiledEventType>();
  for (const [type, spec] of Object.entries(rules.events)) {
    const counters: CompiledCounter[] = spec.counters.map((c, i) => {
      const where = `events.${type}.counters.${i}`;
      const entity = rules.entities[c.entity];
      if (!entity) throw new RulesError(`rollup rules: ${where}: unknown entity "${c.entity}"`);
      const metric = rules.metrics[c.metric];
      if (!metric) throw new RulesError(`rollup rules: ${where}: unknown metric "${c.metric}"`);
      const needs = [...entity.key, ...(c.by ? [c.by] : [])];
      for (const d of needs) {
        if (!spec.dims[d]) throw new RulesError(`rollup rules: ${where}: dimension "${d}" is not declared in events.${type}.dims`);
      }
      if (c.op === 'sum' && spec.value === 'forbidden') {
        throw new RulesError(`rollup rules: ${where}: a sum counter needs events.${type}.value to be required or optional`);
      }
      if (c.op === 'count' && metric.scale !== 0) {
        throw new RulesError(`rollup rules: ${where}: count counters need a metric with scale 0 (${c.metric} has ${metric.scale})`);
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
    const sums = counters.filter((c) => c.op === 'sum');
    eventTypes.set(type, {
      name: type,
      dims: spec.dims,
      value: spec.value,
      counters,
      valueScale: Math.max(0, ...sums.map((c) => c.scale)),
      hasSum: sums.length > 0,
    });
  }

  const attrMetric = (metric: string, sub?: string) => {
    const spec = rules.metrics[metric];
    return formatMetricName(spec?.code ?? metric, sub);
  };

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
      return rules.entities[entity] ? entity : undefined;
    },
    policyOfPk(pk) {
      const name = this.entityOfPk(pk);
      const spec = name ? rules.entities[name] : undefined;
      return spec?.flush ?? { kind: 'bucket' };
    },
    rankOfPk(pk) {
      const { entity, keyValues } = parsePk(pk);
      if (entity === undefined || keyValues.length !== 1 || !rules.entities[entity]?.rank) return undefined;
      return { entity, member: keyValues[0]! };
    },
    scaleOf(metric) {
      return rules.metrics[metric]?.scale ?? 0;
    },
    dimFormat(dim) {
      return Object.hasOwn(rules.dimensions, dim) ? rules.dimensions[dim]!.format : 'id';
    },
    pkOf(store, entity, keyValues) {
      const spec = rules.entities[entity];
      if (!spec) throw new RulesError(`unknown entity "${entity}"`);
      return spec.key.length === 0 ? store : entityPk(store, entity, keyValues);
    },
    distinctOf(entity) {
      return distinctByEntity.get(entity) ?? [];
    },
  };
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
