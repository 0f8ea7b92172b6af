import { parseOutboxField, REDIS_SUFFIX, redisKeys, storeShard, WORK_SUFFIX, type RedisKeys } from '@tally/key-layout';
import type { CompiledRules, FlushPolicy, RowDeltas } from '@tally/schema';
import type { Cluster, Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { BucketsError, type BucketsErrorCode } from './errors';
import { ACK_OUTBOX, APPLY, FILL_CACHE, FINISH_FOLD, FOLD, READ_OUTBOX, SEAL, SNAPSHOT, TOP, TOUCH_CACHE } from './scripts';
import { SketchStore } from './sketch-store';
import { PUBLISH_BACKLOG, VISIT } from './work-scripts';

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
  /** One server or a Redis Cluster: every script runs on one store's hash slot. */
  redis: Redis | Cluster;
  rules: CompiledRules;
  /** KEY_PREFIX of the config. */
  prefix?: string;
  /** QUEUE_SHARDS of the config: the sealer's work set is split alike. Default 1. */
  shards?: number;
}

/** What one store holds that is not yet in DynamoDB. */
export interface StoreBacklog {
  /** Rows with folded counts not yet written. */
  rows: number;
  /** Outbox entries (row, bucket, day, metric) not yet written. */
  entries: number;
  /** Time the oldest unwritten count was folded (ms). */
  oldestDirty: number | undefined;
  /** Seq (open time, ms) of the oldest bucket not folded: the oldest sealed one, else the open one if it has data. */
  oldestUnfolded: number | undefined;
}

/** The backlog of every store of the installation, summed (oldest = the minimum). */
export type Backlog = StoreBacklog;

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
  readonly shards: number;
  /** The distinct-count sketches (unique visitors) of the same stores, on the same Redis. */
  readonly sketches: SketchStore;
  private readonly redis: Redis | Cluster;
  private readonly rules: CompiledRules;
  private readonly cmd: Record<string, Cmd>;

  constructor(opts: BucketStoreOptions) {
    this.redis = opts.redis;
    this.rules = opts.rules;
    this.keys = redisKeys(opts.prefix ?? 't');
    this.shards = opts.shards ?? 1;
    this.sketches = new SketchStore({ redis: opts.redis, prefix: opts.prefix });
    const scripts = { APPLY, SEAL, FOLD, FINISH_FOLD, READ_OUTBOX, ACK_OUTBOX, SNAPSHOT, FILL_CACHE, TOUCH_CACHE, TOP, PUBLISH_BACKLOG, VISIT };
    const numberOfKeys: Record<string, number> = { APPLY: 2, PUBLISH_BACKLOG: 5 };
    this.cmd = {};
    for (const [name, lua] of Object.entries(scripts)) {
      const id = `tally${name}`;
      if (!(id in this.redis)) this.redis.defineCommand(id, { lua, numberOfKeys: numberOfKeys[name] ?? 1 });
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

  /** The store's work-set shard. */
  shardOf(store: string): number {
    return storeShard(store, this.shards);
  }

  private workKeys(shard: number): [string, string, string, string, string] {
    const w = this.keys.work(shard);
    return [w + WORK_SUFFIX.active, w + WORK_SUFFIX.stats, w + WORK_SUFFIX.totals, w + WORK_SUFFIX.oldestDirty, w + WORK_SUFFIX.oldestUnfolded];
  }

  /**
   * Puts the store in the sealer's work set, or bumps its mark if it is there: call after every apply, duplicates
   * included (outside the apply script: another hash slot; an apply whose mark was lost to a crash is retried
   * by its job, which marks again).
   */
  async registerStore(store: string): Promise<void> {
    await this.redis.zincrby(this.workKeys(this.shardOf(store))[0], 1, store);
  }

  /** Stores of a work-set shard with anything not yet written, with their marks: what one sealer tick visits. */
  async activeStores(shard: number): Promise<Array<{ store: string; mark: string }>> {
    const flat = await this.redis.zrange(this.workKeys(shard)[0], 0, -1, 'WITHSCORES');
    const out: Array<{ store: string; mark: string }> = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ store: flat[i]!, mark: flat[i + 1]! });
    return out;
  }

  /** The store's backlog from its running counts: one round trip (two when only the open bucket may hold data). */
  async storeBacklog(store: string): Promise<StoreBacklog> {
    const res = await this.redis
      .pipeline()
      .zcard(this.keys.dirty(store))
      .zrange(this.keys.dirty(store), 0, 0, 'WITHSCORES')
      .lindex(this.keys.sealed(store), 0)
      .get(this.keys.epoch(store))
      .hget(this.keys.counts(store), 'entries')
      .exec();
    const [rows, firstDirty, head, epoch, entries] = (res ?? []).map(([err, v]) => {
      if (err) throw err;
      return v;
    }) as [number, string[], string | null, string | null, string | null];
    let oldestUnfolded = head === null ? undefined : Number(head);
    if (oldestUnfolded === undefined && epoch !== null && (await this.redis.exists(this.keys.bucketRows(store, epoch)))) oldestUnfolded = Number(epoch);
    return { rows, entries: Number(entries ?? 0), oldestDirty: firstDirty.length === 2 ? Number(firstDirty[1]) : undefined, oldestUnfolded };
  }

  /**
   * Publishes the store's backlog to its work-set shard (what the gauges read). With `mark` (the sealer), a store
   * with nothing left and no apply since `mark` leaves the work set. Returns 'absent' when the store is not in
   * the work set (then nothing is published), 'published' or 'retired'.
   */
  async publishBacklog(store: string, b: StoreBacklog, mark?: string): Promise<'absent' | 'published' | 'retired'> {
    return (await this.publishBacklogs(this.shardOf(store), [{ store, backlog: b, mark }]))[0]!;
  }

  /** publishBacklog for many stores of one work-set shard in one call (the sealer's, per batch of stores). */
  async publishBacklogs(shard: number, items: ReadonlyArray<{ store: string; backlog: StoreBacklog; mark?: string }>): Promise<Array<'absent' | 'published' | 'retired'>> {
    const out: Array<'absent' | 'published' | 'retired'> = [];
    for (let i = 0; i < items.length; i += 500) {
      const args: Array<string | number> = [];
      for (const { store, backlog: b, mark } of items.slice(i, i + 500)) {
        args.push(store, b.rows, b.entries, b.oldestDirty ?? '', b.oldestUnfolded ?? '', mark ?? '');
      }
      const r = (await this.cmd['PUBLISH_BACKLOG']!(...this.workKeys(shard), ...args)) as number[];
      for (const x of r) out.push(Number(x) === 2 ? 'retired' : Number(x) === 1 ? 'published' : 'absent');
    }
    return out;
  }

  /**
   * A sealer's visit of a store in one round trip: seals the open bucket when it is due (as seal()) and reports
   * what is left: the oldest sealed bucket (undefined: nothing to fold), the store's backlog and how many rows are
   * due at `now`.
   */
  async visit(store: string, opts: { now: number; minAgeMs: number }): Promise<{ sealed: number | undefined; sealedHead: number | undefined; due: number; backlog: StoreBacklog }> {
    const [sealed, head, rows, firstDirty, entries, due, unfolded] = (await this.cmd['VISIT']!(this.keys.tag(store), opts.now, opts.minAgeMs)) as [string, string, number, string, string, number, string];
    const opt = (s: string) => (s === '' ? undefined : Number(s));
    return {
      sealed: opt(sealed),
      sealedHead: opt(head),
      due: Number(due),
      backlog: { rows: Number(rows), entries: Number(entries), oldestDirty: opt(firstDirty), oldestUnfolded: opt(unfolded) },
    };
  }

  /** The installation's backlog: one bounded read per work-set shard (sums and minimums kept by publishBacklog). */
  async backlog(): Promise<Backlog> {
    const out: Backlog = { rows: 0, entries: 0, oldestDirty: undefined, oldestUnfolded: undefined };
    const min = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : Math.min(a, b));
    await Promise.all(
      Array.from({ length: this.shards }, async (_, shard) => {
        const [, , totals, od, ou] = this.workKeys(shard);
        const res = await this.redis.pipeline().hmget(totals, 'rows', 'entries').zrange(od, 0, 0, 'WITHSCORES').zrange(ou, 0, 0, 'WITHSCORES').exec();
        const [t, d, u] = (res ?? []).map(([err, v]) => {
          if (err) throw err;
          return v;
        }) as [Array<string | null>, string[], string[]];
        out.rows += Number(t[0] ?? 0);
        out.entries += Number(t[1] ?? 0);
        out.oldestDirty = min(out.oldestDirty, d.length === 2 ? Number(d[1]) : undefined);
        out.oldestUnfolded = min(out.oldestUnfolded, u.length === 2 ? Number(u[1]) : undefined);
      }),
    );
    return out;
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
