import { parseOutboxField, REDIS_SUFFIX, redisKeys, type RedisKeys } from '@tally/key-layout';
import type { CompiledRules, FlushPolicy, RowDeltas } from '@tally/schema';
import type { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { BucketsError, type BucketsErrorCode } from './errors';
import { ACK_OUTBOX, APPLY, FILL_CACHE, FINISH_FOLD, FOLD, READ_OUTBOX, SEAL, SNAPSHOT, TOP, TOUCH_CACHE } from './scripts';

/** Counts are held in Redis as base-10^15 limbs: field `f` and, when needed, `f|1` and `f|2` (scripts.ts). */
const LIMB_BASE = 10n ** 15n;
const LIMB_NAMES = ['', '|1', '|2'] as const;

/**
 * Adds up the limbs of outbox-format fields (`<seq>|<day>|<metric>` and its `|1`, `|2` limbs) from a flat
 * HGETALL-style list into exact counts by field.
 */
function combineLimbs(flat: readonly string[], from = 0): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (let i = from; i < flat.length; i += 2) {
    let field = flat[i]!;
    let value = BigInt(flat[i + 1]!);
    const a = field.indexOf('|');
    const b = field.indexOf('|', a + 1);
    const c = field.indexOf('|', b + 1);
    if (c >= 0) {
      value *= LIMB_BASE ** BigInt(field.slice(c + 1));
      field = field.slice(0, c);
    }
    out.set(field, (out.get(field) ?? 0n) + value);
  }
  return out;
}

/** One count not yet in DynamoDB: bucket seq, store-local day, attribute metric, integer delta. */
export interface Entry {
  seq: number;
  dayKey: string;
  metric: string;
  value: bigint;
}

export interface OutboxRead {
  /** Last bucket seq folded completely ('' / -1 when none). */
  foldedThrough: number;
  /** Entries with seq <= foldedThrough, with their outbox field names. */
  entries: Array<Entry & { field: string }>;
}

export interface RowSnapshot {
  pk: string;
  entries: Entry[];
  /** The cached DynamoDB items (JSON); `=` when the caller's known version is still current. */
  cache: string | undefined;
  cacheVersion: string;
}

export interface BucketStoreOptions {
  redis: Redis;
  rules: CompiledRules;
  /** KEY_PREFIX of the config. */
  prefix?: string;
}

type Cmd = (...args: Array<string | number>) => Promise<any>;

function policyArgs(p: FlushPolicy): [string, number, number] {
  switch (p.kind) {
    case 'bucket':
      return ['bucket', 0, 0];
    case 'every':
      return ['every', p.minutes * 60_000, 0];
    case 'idle':
      return ['idle', p.idleMinutes * 60_000, p.maxAgeMinutes * 60_000];
  }
}

/**
 * The Redis side of the count pipeline (docs/DESIGN.md "how counts move exactly once"): apply batches into the
 * open bucket, seal, fold into row outboxes, schedule flushes, hand outboxes to the writer and snapshots to
 * queries. Every state change is one Lua script on one store's hash tag.
 */
export class BucketStore {
  readonly keys: RedisKeys;
  private readonly redis: Redis;
  private readonly rules: CompiledRules;
  private readonly cmd: Record<string, Cmd>;

  constructor(opts: BucketStoreOptions) {
    this.redis = opts.redis;
    this.rules = opts.rules;
    this.keys = redisKeys(opts.prefix ?? 't');
    const scripts = { APPLY, SEAL, FOLD, FINISH_FOLD, READ_OUTBOX, ACK_OUTBOX, SNAPSHOT, FILL_CACHE, TOUCH_CACHE, TOP };
    this.cmd = {};
    for (const [name, lua] of Object.entries(scripts)) {
      const id = `tally${name}`;
      if (!(id in this.redis)) this.redis.defineCommand(id, { lua, numberOfKeys: name === 'APPLY' ? 2 : 1 });
      this.cmd[name] = (...args) => (this.redis as any)[id](...args);
    }
  }

  /**
   * Applies a batch's deltas to the store's open bucket, at most once per batch id within the dedupe window.
   * Returns whether it was applied (false = duplicate) and the bucket seq.
   */
  async apply(store: string, batchId: string, deltas: RowDeltas, opts: { now: number; dedupeTtlSeconds: number }): Promise<{ applied: boolean; seq: number }> {
    const args: Array<string | number> = [opts.now, opts.dedupeTtlSeconds, deltas.size];
    for (const [pk, fields] of deltas) {
      args.push(pk, fields.size);
      for (const [field, delta] of fields) args.push(field, delta.toString());
    }
    let reply: [number, string];
    try {
      reply = await this.cmd['APPLY']!(this.keys.tag(store), this.keys.batch(store, batchId), ...args);
    } catch (err) {
      const code = /^(TALLY_ERR_[A-Z_]+) /.exec((err as Error).message ?? '')?.[1] as BucketsErrorCode | undefined;
      if (code) throw new BucketsError(code, `batch ${batchId} of store ${store} not applied (nothing written): ${(err as Error).message}`, { cause: err });
      throw err;
    }
    const [applied, seq] = reply;
    return { applied: applied === 1, seq: Number(seq) };
  }

  /** Registers a store as having data (outside the apply script: a different hash slot). Idempotent. */
  async registerStore(store: string): Promise<void> {
    await this.redis.sadd(this.keys.stores, store);
  }

  async stores(): Promise<string[]> {
    return this.redis.smembers(this.keys.stores);
  }

  /** Seals the open bucket if it has data and is at least minAgeMs old. Returns the sealed seq. */
  async seal(store: string, opts: { now: number; minAgeMs: number }): Promise<number | undefined> {
    const r = await this.cmd['SEAL']!(this.keys.tag(store), opts.now, opts.minAgeMs);
    return r === null || r === undefined ? undefined : Number(r);
  }

  /**
   * Folds every sealed bucket of the store, oldest first, into row outboxes; foldedThrough advances only
   * when a bucket is folded completely. Safe to run concurrently with another folder (each row fold is
   * atomic and idempotent). Returns the buckets finished and rows moved by this call.
   */
  async foldSealed(store: string, opts: { now: number; rowsPerCall?: number }): Promise<{ buckets: number; rows: number }> {
    const tag = this.keys.tag(store);
    const batch = opts.rowsPerCall ?? 200;
    let buckets = 0;
    let rows = 0;
    for (;;) {
      const head = await this.redis.lindex(this.keys.sealed(store), 0);
      if (head === null) break;
      for (;;) {
        const pks = await this.redis.srandmember(this.keys.bucketRows(store, head), batch);
        if (pks.length === 0) break;
        const args: Array<string | number> = [head, opts.now];
        for (const pk of pks) {
          const rank = this.rules.rankOfPk(pk);
          args.push(pk, ...policyArgs(this.rules.policyOfPk(pk)), rank?.entity ?? '', rank?.member ?? '');
        }
        rows += Number(await this.cmd['FOLD']!(tag, ...args));
      }
      const done = Number(await this.cmd['FINISH_FOLD']!(tag, head));
      if (done === 1) buckets++;
      // 0: another folder finished it; -1: rows reappeared in a race with another folder: loop again.
    }
    return { buckets, rows };
  }

  /** Rows whose flush is due at `now`, with the time of their oldest unwritten count. */
  async dueRows(store: string, now: number, limit = 10_000): Promise<Array<{ pk: string; firstDirty: number }>> {
    const pks = await this.redis.zrangebyscore(this.keys.due(store), '-inf', now, 'LIMIT', 0, limit);
    if (pks.length === 0) return [];
    const firsts = await this.redis.zmscore(this.keys.dirty(store), ...pks);
    return pks.map((pk, i) => ({ pk, firstDirty: firsts[i] === null ? now : Number(firsts[i]) }));
  }

  /** Time of the oldest count folded but not yet written, for the store (undefined when none). */
  async oldestDirty(store: string): Promise<number | undefined> {
    const r = await this.redis.zrange(this.keys.dirty(store), 0, 0, 'WITHSCORES');
    return r.length === 2 ? Number(r[1]) : undefined;
  }

  /** Rows with folded counts not yet written. */
  async dirtyCount(store: string): Promise<number> {
    return this.redis.zcard(this.keys.dirty(store));
  }

  /** Outbox entries (one per row, bucket, day and metric) waiting to be written, over the store's dirty rows. */
  async outboxEntries(store: string): Promise<number> {
    const pks = await this.redis.zrange(this.keys.dirty(store), 0, -1);
    let total = 0;
    for (let i = 0; i < pks.length; i += 1000) {
      const pipe = this.redis.pipeline();
      for (const pk of pks.slice(i, i + 1000)) pipe.hlen(this.keys.outbox(store, pk));
      for (const [err, n] of (await pipe.exec()) ?? []) if (!err) total += Number(n);
    }
    return total;
  }

  /** Seq (open time, ms) of the oldest bucket not yet folded: the oldest sealed one, else the open one if it has data. */
  async oldestUnfolded(store: string): Promise<number | undefined> {
    const head = await this.redis.lindex(this.keys.sealed(store), 0);
    if (head !== null) return Number(head);
    const epoch = await this.redis.get(this.keys.epoch(store));
    if (epoch === null) return undefined;
    return (await this.redis.exists(this.keys.bucketRows(store, epoch))) ? Number(epoch) : undefined;
  }

  /** The writer's read: the row's outbox entries of completely folded buckets. */
  async readOutbox(store: string, pk: string): Promise<OutboxRead> {
    const flat = (await this.cmd['READ_OUTBOX']!(this.keys.tag(store), pk)) as string[];
    const folded = flat[0];
    const foldedThrough = folded === '' || folded === undefined ? -1 : Number(folded);
    const entries: OutboxRead['entries'] = [];
    for (const [field, value] of combineLimbs(flat, 1)) {
      const f = parseOutboxField(field);
      if (f.seq <= foldedThrough) entries.push({ ...f, value, field });
    }
    return { foldedThrough, entries };
  }

  /**
   * Deletes applied outbox entries (with their limbs), drops the row's cache and reschedules what is left.
   * Returns the outbox fields left.
   */
  async ackOutbox(store: string, pk: string, fields: readonly string[], now: number): Promise<number> {
    const limbs = fields.flatMap((f) => LIMB_NAMES.map((l) => f + l));
    return Number(await this.cmd['ACK_OUTBOX']!(this.keys.tag(store), pk, now, ...policyArgs(this.rules.policyOfPk(pk)), ...limbs));
  }

  /**
   * One atomic read of everything in Redis not yet in DynamoDB for the given rows of one store (and, with
   * withCache, each row's cached DynamoDB items and cache version; where `knownVersions[i]` is still the
   * row's version, the cache comes back as `=` so a caller holding it parsed need not transfer it again).
   */
  async snapshot(store: string, pks: readonly string[], withCache = false, knownVersions: ReadonlyArray<string | undefined> = []): Promise<RowSnapshot[]> {
    if (pks.length === 0) return [];
    const args: string[] = [];
    pks.forEach((pk, i) => args.push(pk, knownVersions[i] ?? ''));
    const raw = (await this.cmd['SNAPSHOT']!(this.keys.tag(store), withCache ? '1' : '0', ...args)) as Array<[string[], string | null, string]>;
    return raw.map(([flat, cache, version], i) => {
      const entries: Entry[] = [];
      for (const [field, value] of combineLimbs(flat)) entries.push({ ...parseOutboxField(field), value });
      return { pk: pks[i]!, entries, cache: cache ?? undefined, cacheVersion: String(version) };
    });
  }

  /** Stores a row's DynamoDB items in the cache unless the writer acked entries since `version` was read. */
  async fillCache(store: string, pk: string, version: string, json: string, ttlSeconds: number): Promise<boolean> {
    return Number(await this.cmd['FILL_CACHE']!(this.keys.tag(store), pk, version, json, ttlSeconds)) === 1;
  }

  /**
   * The highest-ranked members of a ranked entity for a metric over the given days (sealed buckets only:
   * rankings are updated when buckets fold). Values are for ordering; read exact counts with a query.
   */
  async top(store: string, entity: string, metric: string, dayKeys: readonly string[], limit: number): Promise<Array<{ member: string; score: number }>> {
    const suffixes = dayKeys.map((d) => `${REDIS_SUFFIX.rank}${d}:${metric}:${entity}`);
    const flat = (await this.cmd['TOP']!(this.keys.tag(store), `tmp:${randomUUID()}`, limit, ...suffixes)) as string[];
    const out: Array<{ member: string; score: number }> = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ member: flat[i]!, score: Number(flat[i + 1]) });
    return out;
  }

  async touchCache(store: string, pk: string, ttlSeconds: number): Promise<void> {
    await this.cmd['TOUCH_CACHE']!(this.keys.tag(store), pk, ttlSeconds);
  }
}
