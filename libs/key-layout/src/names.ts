import { fromDayOfYear, type LocalDate } from './calendar';
import { KeyLayoutError } from './errors';

/**
 * DynamoDB layout of docs/DESIGN.md, kept exactly:
 *   pk = entity (`STORE12345`, `STORE12345#product#P1`)
 *   sk = `M2023-05` month row: `D123.<metric>` per day, `M05.<metric>` for the month
 *   sk = `TOTAL` all-time row: `<metric>` and `Y2023.<metric>` per year
 * Attribute names are flat strings containing a dot, always sent through ExpressionAttributeNames.
 */

/** Ids of stores and dimension values. `#`, `|`, `[`, `]`, `{`, `}` and spaces can never appear. */
export const ID_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;
/** Store ids additionally start with a letter or digit (`_` starts reserved keys). */
export const STORE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/**
 * How a hash tag of Tally's own Redis keys ends, whatever the KEY_PREFIX (which holds no `:`): the sealer's work-set
 * shards `{<p>:w<N>}` (redis-keys.ts work), and the BullMQ queues `{<p>:<queue>}` and, sharded, `{<p>:<queue>:<N>}`
 * (libs/queues layout.ts queuePrefix; the queue names of libs/queues names.ts QUEUE). The installation's other keys
 * (`<p>:rules`, `<p>:dedupe-window`, `<p>:top-history`) have no hash tag, and a store's keys always have one, so no
 * store's key is ever one of them.
 */
const INTERNAL_TAG_END = /:(?:w[0-9]+|events|seal|dynamo-writes|maintenance)(?::[0-9]+)?$/;

/**
 * Whether a store id could be the hash tag of Tally's own keys under some KEY_PREFIX: an id that ends in `:w<digits>`
 * (a work-set shard) or in `:events`, `:seal`, `:dynamo-writes` or `:maintenance` (a queue), either optionally
 * followed by `:<digits>`. Such a store's keys `<p>:{<store>}:…` would share that tag's slot, and store `t:w0` under
 * KEY_PREFIX `t` would share its key prefix `t:{t:w0}:` with work-set shard 0: deleting it (a SCAN of
 * `<p>:{<store>}:*`) would delete the shard's work set. No new store may take such an id (libs/tenants
 * createTenant); a store that has one already keeps being read and written.
 */
export function sharesInternalHashTag(store: string): boolean {
  return INTERNAL_TAG_END.test(store);
}

/** Entity and metric names in the rollup rules. */
export const NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

export const TOTAL_SK = 'TOTAL';
export const WATERMARK_ATTR = 'wm';
/**
 * Set only while the bucket `wm` is applied in parts (more attributes than one UpdateItem takes): the last part
 * of that bucket applied. Absent: bucket `wm` is applied completely. Its dot keeps it out of every metric name.
 */
export const WATERMARK_PART_ATTR = 'wm.p';
/**
 * Set on an item that has spilled (neared its size bound): counts beyond its position (`wm`, `wm.p`), which
 * never moves again, go to its overflow items `<sk>#<h…>` by a hash of the attribute name (libs/dynamo overflow).
 */
export const SPILLED_ATTR = 'wm.x';

/** The item (month row or TOTAL) an overflow item `M2023-05#a3` belongs to; the sk itself for a base item. */
export function baseSk(sk: string): string {
  const hash = sk.indexOf('#');
  return hash < 0 ? sk : sk.slice(0, hash);
}
/**
 * Version of an item's distinct-count sketches (binary attributes such as `D123.uv`): every write of a sketch
 * sets it one higher on condition that it is still the version read, so two writers never lose each other's union.
 */
export const SKETCH_VERSION_ATTR = 'wm.h';
/** The DynamoDB TTL attribute (epoch seconds) the writer sets on the items of a visitor row under a retention. */
export const EXPIRES_ATTR = 'expiresAt';
/**
 * Set (a string: the ISO time of the erasure) on a tombstone item: an item that erasing a visitor or deleting a store
 * (libs/tenants erasure.ts) put in place of a counter item, holding no counts, its `wm` the fence (no bucket at or
 * below it may be written to it again) and an EXPIRES_ATTR of its own. Every counter write removes it (libs/dynamo
 * row-writer). Its dot keeps it out of every metric name (a code holds none), so it need not be in RESERVED_ATTRS.
 */
export const ERASED_ATTR = 'wm.e';

/**
 * Every attribute name a counter item (month row, TOTAL, their overflow items) carries besides its counts: the
 * table's keys, the position marks, the sketch version and the TTL. No attribute name of a metric (dayAttr,
 * monthAttr, yearAttr, totalAttr, with or without a `#<key>`) may be one of them, or its counts would be added to
 * the TTL (DynamoDB then deletes the item) or to a mark: the rules refuse such a metric (reservedAttrOf).
 */
export const RESERVED_ATTRS: ReadonlySet<string> = new Set([
  'pk',
  'sk',
  WATERMARK_ATTR,
  WATERMARK_PART_ATTR,
  SPILLED_ATTR,
  SKETCH_VERSION_ATTR,
  EXPIRES_ATTR,
]);

const pad = (n: number, w: number) => String(n).padStart(w, '0');

export function monthSk(year: number, month: number): string {
  return `M${pad(year, 4)}-${pad(month, 2)}`;
}

export function parseMonthSk(sk: string): { year: number; month: number } | undefined {
  const m = /^M(\d{4})-(\d{2})$/.exec(sk);
  if (!m) return undefined;
  const month = Number(m[2]);
  if (month < 1 || month > 12) return undefined;
  return { year: Number(m[1]), month };
}

export const dayAttr = (doy: number, metric: string) => `D${pad(doy, 3)}.${metric}`;
export const monthAttr = (month: number, metric: string) => `M${pad(month, 2)}.${metric}`;
export const yearAttr = (year: number, metric: string) => `Y${pad(year, 4)}.${metric}`;

/** The year of a TOTAL item's year cell (`yearAttr`), or undefined for any other attribute. */
export function parseYearAttr(attr: string): number | undefined {
  const m = /^Y(\d{4})\./.exec(attr);
  return m ? Number(m[1]) : undefined;
}
export const totalAttr = (metric: string) => metric;

/** The prefix dayAttr, monthAttr and yearAttr put before a metric; totalAttr puts none. */
const CELL_PREFIX = /^(?:D\d{3}|M\d{2}|Y\d{4})\./;

/**
 * The reserved attribute (RESERVED_ATTRS) that one of the attribute names of metric code `metric` would be (bare on
 * TOTAL, behind a day, month or year prefix, with or without a `#<key>`), or undefined when none can be.
 */
export function reservedAttrOf(metric: string): string | undefined {
  for (const attr of RESERVED_ATTRS) {
    const prefix = CELL_PREFIX.exec(attr);
    for (const name of prefix ? [attr, attr.slice(prefix[0].length)] : [attr]) {
      const hash = name.indexOf('#');
      if ((hash < 0 ? name : name.slice(0, hash)) === metric) return attr;
    }
  }
  return undefined;
}

/** Partition key of an entity: the store itself, or `store#entity#k1[#k2…]`. */
export function entityPk(store: string, entity: string | undefined, keyValues: readonly string[] = []): string {
  if (!entity) return store;
  if (keyValues.length === 0) throw new KeyLayoutError(`entity ${entity} needs at least one key value`);
  return [store, entity, ...keyValues].join('#');
}

export function parsePk(pk: string): { store: string; entity: string | undefined; keyValues: string[] } {
  const [store, entity, ...keyValues] = pk.split('#');
  return { store: store!, entity, keyValues };
}

/**
 * A day's counts in Redis fields are keyed by `YYYY-DDD` (store-local year and day of year); the month row,
 * month total, year total and all-time total are derived from it when written and when merged, so the apply
 * script does one HINCRBY per counter instead of four.
 */
export function dayKey(d: { year: number; doy: number }): string {
  return `${pad(d.year, 4)}-${pad(d.doy, 3)}`;
}

export function parseDayKey(key: string): LocalDate {
  const m = /^(\d{4})-(\d{3})$/.exec(key);
  if (!m) throw new KeyLayoutError(`bad day key ${JSON.stringify(key)}`);
  return fromDayOfYear(Number(m[1]), Number(m[2]));
}

/** The four DynamoDB cells a day's count lands in: two attributes of the month row, two of TOTAL. */
export function cellsOfDay(d: LocalDate, metric: string): Array<{ sk: string; attr: string }> {
  const sk = monthSk(d.year, d.month);
  return [
    { sk, attr: dayAttr(d.doy, metric) },
    { sk, attr: monthAttr(d.month, metric) },
    { sk: TOTAL_SK, attr: totalAttr(metric) },
    { sk: TOTAL_SK, attr: yearAttr(d.year, metric) },
  ];
}
