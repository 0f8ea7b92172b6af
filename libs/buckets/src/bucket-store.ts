import {
  parseOutboxField,
  parsePk,
  REDIS_SUFFIX,
  redisKeys,
  storeHash,
  storeShard,
  WORK_SUFFIX,
  type RedisKeys,
  keptForWindow,
} from '@tally/key-layout';
import { flattenRows, type CompiledRules, type FlushPolicy, type RowDeltas } from '@tally/schema';
import { ReplyError, type Cluster, type Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { BucketsError, SnapshotContendedError, TopTooLargeError, type BucketsErrorCode } from './errors';
import { runScript, runScripts, type ScriptCall, type ScriptDef } from './script-table';
import { ACK_OUTBOX, APPLY, FILL_CACHE, FINISH_FOLD, FOLD, READ_OUTBOX, SEAL, SNAPSHOT, TOP, TOUCH_CACHE } from './scripts';
import { SketchStore } from './sketch-store';
import { DUE_STORES, LEAVE_SHARD, PUBLISH_BACKLOG, REGISTER, VISIT, type VisitReply } from './work-scripts';

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
  /** How long a daily ranking zset (top lists) lives after its last apply. Default RANK_TTL_DAYS days. */
  rankTtlSeconds?: number;
  /** How long a row's cache version outlives its last ack (longer than any cached history). Default 2 days. */
  cacheVersionTtlSeconds?: number;
}

const DAY_SECONDS = 86_400;

/**
 * Days a daily ranking zset (top lists) lives after the last apply that counted in it, unless BucketStoreOptions
 * say otherwise (`rankTtlSeconds`, the aggregator's TOP_HISTORY_DAYS): the default of TOP_HISTORY_DAYS, and what
 * the aggregators kept before it could be changed (top-history.ts: a query reads no day a shorter retention may have
 * let expire, readTop in @tally/query).
 */
export const RANK_TTL_DAYS = 100;

/**
 * Ranking members one top list may union unless told otherwise (BucketStore.top; the query API's TOP_MAX_MEMBERS):
 * the ZCARDs of the days asked, summed. Redis serves no other client while the union runs. Measured on Redis 7.0
 * (TOP over 92 days): about 1.3 µs of Redis CPU per member when every member is a distinct id, the worst case
 * (30,000 members: 40 ms, 100,000: 220 ms), and about 0.15 µs when the days share their ids (a catalogue viewed day
 * after day: 200,000 summed, 29 ms). The default, 300,000, lets a 30-day list rank 10,000 different ids a day (about
 * 45 ms for a catalogue); random ids up to it would take about 0.4 s, for a store that sends them.
 */
export const TOP_MAX_MEMBERS = 300_000;

/** How many times a script is retried with the store's current layout after a stale reply (a seal in between). */
const STALE_RETRIES = 8;

/** Stores whose bucket layout a BucketStore remembers; past this the store learnt longest ago is forgotten. */
const LAYOUT_CACHE_STORES = 100_000;

/** Rows of one bucket folded per FOLD call. */
const ROWS_PER_FOLD = 200;

/** Stores one sealer tick visits per work-set shard at most (the rest, due longest, on the next tick). */
const DUE_STORES_PER_TICK = 100_000;

/** Stores moved per REGISTER pipeline and LEAVE_SHARD call (moveStores, drainShard). */
const MOVE_STORES = 1000;

/** Stores drainShard moves at most per call (the rest at its next call). */
const DRAIN_STORES = 10_000;

/** Due rows a sealer visit hands over per store and tick (the rest on the next tick). */
const DUE_LIMIT = 10_000;

/** A row whose flush is due, with the time of its oldest unwritten count (ms). */
export interface DueRow {
  pk: string;
  firstDirty: number;
}

/** A due list as the scripts return it (pk, oldest dirty time or '' ...); a row no longer dirty counts from now. */
function dueList(flat: readonly string[], now: number): DueRow[] {
  const out: DueRow[] = [];
  for (let i = 0; i < flat.length; i += 2) out.push({ pk: flat[i]!, firstDirty: flat[i + 1] === '' ? now : Number(flat[i + 1]) });
  return out;
}

/**
 * What a sealer's visit found (visit, visitMany). With `sealedRows` (the caller folds them at once: foldVisitedMany
 * reports what is left) the backlog and due rows are not read: 0 and empty.
 */
export interface Visit {
  /** Seq of the bucket this visit sealed. */
  sealed: number | undefined;
  /** Oldest sealed bucket left (undefined: nothing to fold). */
  sealedHead: number | undefined;
  /** Rows due at the visit's `now`. */
  due: number;
  dueRows: DueRow[];
  /** The rows of the bucket sealed now when it is the oldest sealed one and small enough (for foldVisitedMany). */
  sealedRows: string[] | undefined;
  /** The earliest due time of any row. */
  nextDue: number | undefined;
  backlog: StoreBacklog;
  /** The open bucket's seq after the visit (undefined: the store has none). */
  epoch: string | undefined;
}

/** A sealer's visit (visit, visitMany, visitEach). */
export interface VisitOptions {
  now: number;
  /** The open bucket is sealed when it has data and is at least this old. */
  minAgeMs: number;
  /**
   * The due rows handed back (their flush jobs to be enqueued) are leased for this long: not due again until then
   * unless the writer's ack reschedules them, so a row whose job is pending is handed out once per lease, not at every
   * visit; a row whose job was lost comes due when its lease ends (see DUE_LIST). Only a visit that leaves no sealed
   * bucket leases: after one that does, the caller folds (foldSealed) and visits again, and the rows come from that
   * visit. Default 0: not leased.
   */
  leaseMs?: number;
}

/** What a store has left after foldVisitedMany finished its sealed bucket (as a visit reports it). */
export interface FoldReport {
  /** Rows moved by these calls. */
  rows: number;
  backlog: StoreBacklog;
  due: DueRow[];
  sealedHead: number | undefined;
  nextDue: number | undefined;
}

type FoldReply = Awaited<NonNullable<(typeof FOLD)['reply']>>;
type FoldKey = (typeof FOLD)['keys'][number];
type FoldArg = (typeof FOLD)['args'][number];

function visitOf(r: VisitReply, now: number): Visit {
  const [, sealed, head, rows, firstDirty, entries, due, unfolded, epoch, dueRows, sealedRows, nextDue] = r;
  const opt = (s: string) => (s === '' ? undefined : Number(s));
  return {
    sealed: opt(sealed),
    sealedHead: opt(head),
    due: Number(due),
    dueRows: dueList(dueRows, now),
    sealedRows: sealedRows === 0 ? undefined : sealedRows,
    nextDue: opt(nextDue),
    backlog: { rows: Number(rows), entries: Math.max(0, Number(entries)), oldestDirty: opt(firstDirty), oldestUnfolded: opt(unfolded) },
    epoch: epoch === '' ? undefined : epoch,
  };
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

/** A store's backlog as the sealer publishes it (BucketStore.publishBacklogs). */
export interface PublishItem {
  store: string;
  backlog: StoreBacklog;
  /** The store's mark as the caller read it (the sealer): retire it when nothing is left and no apply came since. */
  mark?: string;
  /** Its next visit time (ms). */
  visitAt?: number;
  /** The open bucket's seq a visit just set (announced to the other instances). */
  epoch?: string;
}

/**
 * A wait for Redis replicas between a move's REGISTERs and its LEAVE_SHARD (BucketStore.moveStores, drainShard):
 * libs/queues ReplicaFence's mark and wait, REDIS_WAIT_REPLICAS.
 */
export interface MoveHold {
  /** A reading taken before the REGISTERs (the wait fails when a connection closed since). */
  mark(): number;
  /** Resolves once replicas hold every write made before it to the slots of `keys` (fence keys); throws otherwise. */
  wait(keys: readonly string[], mark: number): Promise<void>;
}

/** What a publish did to a store: not in the work set, published, or retired. */
export type Published = 'absent' | 'published' | 'retired';

/** Stores per PUBLISH_BACKLOG call. */
const PUBLISH_STORES = 500;

/**
 * Why PUBLISH_BACKLOG would refuse this store's arguments (its checks, made before anything is sent: one such store
 * would have the whole call refused), or undefined.
 */
function backlogArgsProblem({ backlog: b, visitAt }: PublishItem): string | undefined {
  const int = (v: number) => Number.isSafeInteger(v) && String(v).length < 16;
  if (!(int(b.rows) && b.rows >= 0 && int(b.entries) && b.entries >= 0))
    return `rows ${b.rows} and entries ${b.entries} are not non-negative integers`;
  for (const v of [b.oldestDirty, b.oldestUnfolded, visitAt === undefined ? undefined : Math.floor(visitAt)])
    if (v !== undefined && !int(v)) return `${v} is not an integer time`;
  return undefined;
}

/** A policy as FOLD's and ACK_OUTBOX's arguments (DUE in scripts.ts) for a row of `store`. */
function policyArgs(p: FlushPolicy, store: string): [string, number, number] {
  switch (p.kind) {
    case 'bucket':
      return ['bucket', 0, 0];
    case 'every':
      return ['every', p.minutes * 60_000, p.spread ? flushPhaseMs(store, p.minutes) : 0];
    case 'idle':
      return ['idle', p.idleMinutes * 60_000, p.maxAgeMinutes * 60_000];
  }
}

/**
 * A store's phase within an `every` policy's interval of `minutes` when the policy has `spread`: whole minutes, from
 * the store id's hash, so the rows of many stores fall due spread over the interval, each store's at one time of its
 * own (one visit), instead of all at the UTC multiples of the interval. The hash is mixed again (MurmurHash3's
 * finalizer) first: the store's queue shard is the raw hash modulo QUEUE_SHARDS, so a phase of the raw hash modulo
 * `minutes` would give one shard's stores only the minutes congruent to it (with 60 shards and 60 minutes, one minute
 * a shard, and one burst per Cluster master again).
 */
function flushPhaseMs(store: string, minutes: number): number {
  let h = storeHash(store);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (((h ^ (h >>> 16)) >>> 0) % minutes) * 60_000;
}

/**
 * The Redis side of the count pipeline (docs/DESIGN.md "how counts move exactly once"): apply batches into the
 * open bucket, seal, fold into row outboxes, schedule flushes, hand outboxes to the writer and snapshots to
 * queries. Every state change is one Lua script on one store's hash tag.
 */
export class BucketStore {
  /**
   * QUEUE_SHARDS' maximum (libs/config env.schema.ts): the work-set shards past `shards` that a lowered QUEUE_SHARDS
   * may have left are looked for up to it (leftoverShards).
   */
  static readonly MAX_WORK_SHARDS = 256;
  readonly keys: RedisKeys;
  readonly shards: number;
  /** The distinct-count sketches (unique visitors) of the same stores, on the same Redis. */
  readonly sketches: SketchStore;
  private readonly redis: Redis | Cluster;
  private readonly rules: CompiledRules;
  private readonly rankTtlSeconds: number;
  private readonly cacheVersionTtlSeconds: number;
  /**
   * The open bucket's seq last seen per store: scripts that touch the open bucket's keys are called with the keys
   * of this seq and answer `stale` (nothing done) when the store moved on. A hint only: never trusted for counts.
   */
  private readonly epochs = new Map<string, string>();
  /** The sealed seqs last seen per store (for SNAPSHOT's keys), with the same role. */
  private readonly sealedSeqs = new Map<string, string[]>();
  /** The pub/sub channel on which sealers announce the seqs they set (followEpochs). */
  private readonly epochChannel: string;

  constructor(opts: BucketStoreOptions) {
    this.redis = opts.redis;
    this.rules = opts.rules;
    this.keys = redisKeys(opts.prefix ?? 't');
    this.epochChannel = `${opts.prefix ?? 't'}:epochs`;
    this.shards = opts.shards ?? 1;
    this.sketches = new SketchStore({ redis: opts.redis, prefix: opts.prefix });
    this.rankTtlSeconds = opts.rankTtlSeconds ?? RANK_TTL_DAYS * DAY_SECONDS;
    this.cacheVersionTtlSeconds = opts.cacheVersionTtlSeconds ?? 2 * DAY_SECONDS;
  }

  private run<K extends string, A extends string, R>(
    s: ScriptDef<K, A, R>,
    keys: Readonly<Record<K, string>>,
    args: Readonly<Record<A, string | number>>,
    tail?: { keys?: readonly string[]; args?: ReadonlyArray<string | number> },
  ): Promise<R> {
    return runScript(this.redis, s, keys, args, tail);
  }

  /** Remembers a store's layout, forgetting the store learnt longest ago past LAYOUT_CACHE_STORES stores. */
  private remember<V>(map: Map<string, V>, store: string, v: V): void {
    if (!map.delete(store) && map.size >= LAYOUT_CACHE_STORES) map.delete(map.keys().next().value!);
    map.set(store, v);
  }

  /** Calls `attempt` with the store's last known epoch until it is not stale ('' = the store has none). */
  private async withEpoch<R>(store: string, guess: string, attempt: (epoch: string) => Promise<{ ok: R } | { stale: string }>): Promise<R> {
    let epoch = this.epochs.get(store) ?? guess;
    for (let i = 0; i <= STALE_RETRIES; i++) {
      const r = await attempt(epoch);
      if ('ok' in r) return r.ok;
      epoch = r.stale === '' ? guess : r.stale;
      this.remember(this.epochs, store, epoch);
    }
    throw new Error(`store ${store}: the open bucket moved ${STALE_RETRIES + 1} times during one call`);
  }

  /**
   * Applies a batch's deltas to the store's open bucket, at most once per batch id within the dedupe window
   * (`dedupeTtlSeconds`, DEDUPE_WINDOW_SECONDS: the batch id's record is kept that long plus its slack, see
   * libs/key-layout dedupe-window.ts). Returns whether it was applied (false = duplicate) and the bucket seq. A script's refusal
   * (nothing written) throws a BucketsError: its TALLY_ERR_* code, or TALLY_ERR_WRONG_TYPE for a key of another type.
   */
  async apply(
    store: string,
    batchId: string,
    deltas: RowDeltas,
    opts: { now: number; dedupeTtlSeconds: number },
  ): Promise<{ applied: boolean; seq: number; deleted?: true }> {
    return this.applyRows(store, batchId, flattenRows(deltas), opts);
  }

  /**
   * apply() for deltas already flat (FlatRows of libs/queues: per row, pk, field count, then field and delta
   * pairs), as the collector puts them in a job: passed to the script as they are. Ranked rows (products, pages)
   * also add to their entity's daily rankings in the same step (top lists): each ranking zset's members and their
   * summed deltas, added up here, follow the rows.
   */
  async applyRows(
    store: string,
    batchId: string,
    rows: ReadonlyArray<string | number>,
    opts: { now: number; dedupeTtlSeconds: number },
  ): Promise<{ applied: boolean; seq: number; deleted?: true }> {
    const pks: string[] = [];
    // Per ranking zset: its key, and per member its row's index (1-based), the member and its deltas' sum (a double;
    // a member comes twice only from a pk repeated in the rows, and is summed into one).
    type Ranking = { key: string; at: Map<string, number>; rows: number[]; members: string[]; deltas: number[] };
    const rankings = new Map<string, Ranking>(); // by `<entity> <field>`
    for (let i = 0; i < rows.length; i += 2 + 2 * Number(rows[i + 1])) {
      const pk = String(rows[i]);
      pks.push(pk);
      const rank = this.rules.rankOfPk(pk);
      if (!rank) continue;
      for (let f = i + 2; f < i + 2 + 2 * Number(rows[i + 1]); f += 2) {
        const field = String(rows[f]); // `<dayKey>|<metric>`
        if (field.includes('#')) continue;
        const name = `${rank.entity} ${field}`;
        let g = rankings.get(name);
        if (!g) {
          const bar = field.indexOf('|');
          const key = this.keys.rank(store, field.slice(0, bar), field.slice(bar + 1), rank.entity);
          rankings.set(name, (g = { key, at: new Map(), rows: [], members: [], deltas: [] }));
        }
        const at = g.at.get(rank.member);
        if (at === undefined) {
          g.at.set(rank.member, g.members.length);
          g.rows.push(pks.length);
          g.members.push(rank.member);
          g.deltas.push(Number(rows[f + 1]));
        } else g.deltas[at]! += Number(rows[f + 1]);
      }
    }
    const args = [...rows];
    const rankKeys: string[] = [];
    for (const g of rankings.values()) {
      rankKeys.push(g.key);
      args.push(g.members.length, g.rows.join(','));
      for (const m of g.members) args.push(m);
      for (const d of g.deltas) args.push(d);
    }
    const now = String(opts.now);
    let epoch = this.epochs.get(store) ?? now;
    // Inline rather than withEpoch: the hot path, and its reply resolves without extra hops.
    for (let attempt = 0; attempt <= STALE_RETRIES; attempt++) {
      let reply: [1, string] | [0, 0] | [-1, string] | [2, 0];
      try {
        reply = await this.run(
          APPLY,
          {
            epoch: this.keys.epoch(store),
            dedupe: this.keys.batch(store, batchId),
            rows: this.keys.bucketRows(store, epoch),
            tombstone: this.keys.tombstone(store),
            erased: this.keys.erased(store),
          },
          { now, dedupeTtlSeconds: keptForWindow(opts.dedupeTtlSeconds), epoch, rowCount: pks.length, rankTtlSeconds: this.rankTtlSeconds },
          { keys: [...pks.map((pk) => this.keys.bucket(store, epoch, pk)), ...rankKeys], args },
        );
      } catch (err) {
        // A WRONGTYPE comes raw from a command (`WRONGTYPE Operation …`) or from a check's error() (`ERR … WRONGTYPE <key>
        // holds …`); APPLY meets it in its read phase, or takes its HINCRBYs back first: nothing written either way.
        const message = (err as Error).message ?? '';
        const code = (/^(TALLY_ERR_[A-Z_]+) /.exec(message)?.[1] ??
          (/\bWRONGTYPE\b/.test(message) ? 'TALLY_ERR_WRONG_TYPE' : undefined)) as BucketsErrorCode | undefined;
        if (code)
          throw new BucketsError(code, `batch ${batchId} of store ${store} not applied (nothing written): ${(err as Error).message}`, {
            cause: err,
          });
        throw err;
      }
      if (reply[0] === 2) return { applied: false, seq: 0, deleted: true }; // the store was deleted (its tombstone)
      if (reply[0] !== -1) {
        if (reply[0] === 1) this.remember(this.epochs, store, reply[1]);
        return { applied: reply[0] === 1, seq: Number(reply[1]) };
      }
      epoch = reply[1] === '' ? now : reply[1];
      this.remember(this.epochs, store, epoch);
    }
    throw new Error(`store ${store}: the open bucket moved ${STALE_RETRIES + 1} times during one apply`);
  }

  /** Whether the store was deleted: its tombstone is there (for the dedupe window after the deletion). */
  async storeDeleted(store: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.tombstone(store))) === 1;
  }

  /** The store's work-set shard. */
  shardOf(store: string): number {
    return storeShard(store, this.shards);
  }

  /**
   * The work-set shard's mark counter (REGISTER): apart from workKeys, as it is never deleted (a shard's counter restarted
   * could give a store a mark it had before) and does not make a shard past QUEUE_SHARDS a leftover (leftoverShards).
   */
  private markCounter(shard: number): string {
    return this.keys.work(shard) + WORK_SUFFIX.marks;
  }

  private workKeys(shard: number): [string, string, string, string, string, string] {
    const w = this.keys.work(shard);
    return [
      w + WORK_SUFFIX.active,
      w + WORK_SUFFIX.stats,
      w + WORK_SUFFIX.totals,
      w + WORK_SUFFIX.oldestDirty,
      w + WORK_SUFFIX.oldestUnfolded,
      w + WORK_SUFFIX.next,
    ];
  }

  /**
   * Puts the store in the sealer's work set, or bumps its mark if it is there, and makes the sealer visit it no
   * later than `visitAt` (ms; default 0: at its next tick): call after every apply, duplicates included, with the
   * seq of the bucket applied to (outside the apply script: another hash slot; an apply whose mark was lost to a
   * crash is retried by its job, which marks again). With `appliedAt` (the apply's time; a duplicate's too: its
   * counts may not be folded yet), the store's oldest unfolded time moves there when that is earlier, so the gauges
   * count the open bucket from its apply on; the sealer's next visit publishes what the store really holds.
   */
  async registerStore(store: string, visitAt = 0, appliedAt?: number): Promise<void> {
    const shard = this.shardOf(store);
    const [active, , , , oldestUnfolded, next] = this.workKeys(shard);
    await this.run(
      REGISTER,
      { active, next, marks: this.markCounter(shard), oldestUnfolded },
      { store, visitAt: Math.floor(visitAt), unfoldedSince: appliedAt === undefined ? '' : Math.floor(appliedAt) },
    );
  }

  /**
   * Stores of a work-set shard whose next visit time is at most `now` (at most `limit`, the longest due first),
   * with their marks: what one sealer tick visits. One call, however many stores of the shard are not due.
   */
  async dueStores(shard: number, now: number, limit = DUE_STORES_PER_TICK): Promise<Array<{ store: string; mark: string }>> {
    const [active, , , , , next] = this.workKeys(shard);
    const flat = await this.run(DUE_STORES, { active, next }, { now: Math.floor(now), limit });
    const out: Array<{ store: string; mark: string }> = [];
    for (let i = 0; i < flat.length; i += 2) if (flat[i + 1] !== null) out.push({ store: flat[i]!, mark: flat[i + 1]! });
    return out;
  }

  /** The next visit time (ms) of each store of a work-set shard (stores in the work set only). */
  async visitTimes(shard: number): Promise<Map<string, number>> {
    const flat = await this.redis.zrange(this.workKeys(shard)[5], 0, -1, 'WITHSCORES');
    const out = new Map<string, number>();
    for (let i = 0; i < flat.length; i += 2) out.set(flat[i]!, Number(flat[i + 1]));
    return out;
  }

  /** Stores of a work-set shard with anything not yet written, with their marks. */
  async activeStores(shard: number): Promise<Array<{ store: string; mark: string }>> {
    const flat = await this.redis.zrange(this.workKeys(shard)[0], 0, -1, 'WITHSCORES');
    const out: Array<{ store: string; mark: string }> = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ store: flat[i]!, mark: flat[i + 1]! });
    return out;
  }

  /**
   * Moves stores of work-set shard `from` into their own shard (shardOf): stores `from` holds because QUEUE_SHARDS
   * changed since they were registered (the sealer's, for the due stores of a shard it ticks that are not that
   * shard's). Two steps, as the shards are two slots on a Redis Cluster: REGISTER puts each store in its own shard
   * (bumping its mark there; visited at `now`, or earlier if it was due earlier), then LEAVE_SHARD takes the stores
   * so registered out of `from` where their mark is still `mark` (as the caller read it: a store registered in
   * `from` again meanwhile stays there, and is moved again later). With `hold` (REDIS_WAIT_REPLICAS), the LEAVE_SHARD
   * waits until replicas hold the REGISTERs (hold.wait on the fence keys of the shards written: on a Redis Cluster
   * their masters, which need not be `from`'s; on one server one WAIT), and is skipped when that fails: a failover of
   * a new shard's master that lost its REGISTER can then not leave the store in no shard. A crash or a failed hold
   * between the steps leaves a store in both shards, which is harmless (VISIT, FOLD and the flush jobs are safe to run
   * twice; each shard retires it on its own) and is undone by the next move. One round trip per Redis node for the
   * REGISTERs and one LEAVE_SHARD per 1,000 stores. Returns the stores moved, and the REGISTER (and hold) errors (those
   * stores stay in `from`).
   */
  async moveStores(
    from: number,
    stores: ReadonlyArray<{ store: string; mark: string }>,
    now: number,
    opts: { hold?: MoveHold } = {},
  ): Promise<{ moved: number; errors: Error[] }> {
    let moved = 0;
    const errors: Error[] = [];
    for (let i = 0; i < stores.length; i += MOVE_STORES) {
      const r = await this.moveBatch(from, stores.slice(i, i + MOVE_STORES), now, false, opts.hold);
      moved += r.moved;
      errors.push(...r.errors);
    }
    return { moved, errors };
  }

  /**
   * moveStores for at most MOVE_STORES stores; with `drop`, deletes `from`'s keys once no store is left in it. A
   * failed `hold` skips the LEAVE_SHARD (left -1).
   */
  private async moveBatch(
    from: number,
    stores: ReadonlyArray<{ store: string; mark: string }>,
    now: number,
    drop: boolean,
    hold: MoveHold | undefined,
  ): Promise<{ moved: number; left: number; errors: Error[] }> {
    // Before the REGISTERs: the hold's wait covers what this connection sends after it.
    const mark = hold?.mark();
    const replies = await runScripts(
      this.redis,
      REGISTER,
      stores.map(({ store }) => {
        const shard = this.shardOf(store);
        const [active, , , , oldestUnfolded, next] = this.workKeys(shard);
        return {
          keys: { active, next, marks: this.markCounter(shard), oldestUnfolded },
          args: { store, visitAt: Math.floor(now), unfoldedSince: '' },
        };
      }),
    );
    const errors: Error[] = [];
    const registered = stores.filter((_, i) => {
      const r = replies[i];
      if (r instanceof Error) errors.push(r);
      return !(r instanceof Error);
    });
    if (registered.length === 0 && !drop) return { moved: 0, left: -1, errors };
    if (hold && registered.length > 0) {
      const fences = [...new Set(registered.map(({ store }) => this.keys.work(this.shardOf(store)) + REDIS_SUFFIX.fence))];
      try {
        await hold.wait(fences, mark!);
      } catch (err) {
        errors.push(err instanceof Error ? err : new Error(String(err)));
        return { moved: 0, left: -1, errors };
      }
    }
    const [active, stats, totals, oldestDirty, oldestUnfolded, next] = this.workKeys(from);
    const [left, ...removed] = await this.run(
      LEAVE_SHARD,
      { active, stats, totals, oldestDirty, oldestUnfolded, next },
      { drop: drop ? '1' : '0' },
      { args: registered.flatMap(({ store, mark }) => [store, mark]) },
    );
    return { moved: removed.reduce((n, x) => n + Number(x), 0), left: Number(left), errors };
  }

  /**
   * The work-set shards past this instance's `shards`, up to QUEUE_SHARDS' maximum (MAX_WORK_SHARDS), that hold any
   * key: what lowering QUEUE_SHARDS left, which no sealer ticks (drainShard empties them). One EXISTS of each shard's
   * keys (one slot): in one pipeline on one server, all sent at once on a Cluster.
   */
  async leftoverShards(): Promise<number[]> {
    const shards = Array.from({ length: Math.max(0, BucketStore.MAX_WORK_SHARDS - this.shards) }, (_, i) => this.shards + i);
    let found: number[];
    if (this.redis.isCluster) found = await Promise.all(shards.map((s) => this.redis.exists(...this.workKeys(s))));
    else {
      const pipeline = this.redis.pipeline();
      for (const s of shards) pipeline.exists(...this.workKeys(s));
      found = ((await pipeline.exec()) ?? []).map(([err, n]) => {
        if (err) throw err;
        return Number(n);
      });
    }
    return shards.filter((_, i) => found[i]! > 0);
  }

  /**
   * Drains a work-set shard past this instance's `shards` (leftoverShards): moves its stores into their own shards
   * (as moveStores, each visited at `now` there), at most `limit` a call, and once none is left deletes the shard's
   * other keys (stats, totals, oldest times, visit times), so that its stale figures never reach a gauge (even after
   * QUEUE_SHARDS is raised again). With `hold`, each LEAVE_SHARD waits for replicas as moveStores'. Returns the
   * stores moved, whether the shard is gone, and the REGISTER (and hold) errors.
   */
  async drainShard(
    from: number,
    now: number,
    limit = DRAIN_STORES,
    opts: { hold?: MoveHold } = {},
  ): Promise<{ moved: number; empty: boolean; errors: Error[] }> {
    if (!Number.isInteger(from) || from < this.shards)
      throw new RangeError(`work-set shard ${from} is not past QUEUE_SHARDS=${this.shards}`);
    const active = this.workKeys(from)[0];
    let moved = 0;
    const errors: Error[] = [];
    while (moved < limit) {
      const flat = await this.redis.zrange(active, 0, Math.min(MOVE_STORES, limit - moved) - 1, 'WITHSCORES');
      const stores: Array<{ store: string; mark: string }> = [];
      for (let i = 0; i < flat.length; i += 2) stores.push({ store: flat[i]!, mark: flat[i + 1]! });
      const r = await this.moveBatch(from, stores, now, true, opts.hold);
      moved += r.moved;
      errors.push(...r.errors);
      if (r.left === 0) return { moved, empty: true, errors };
      if (r.moved === 0) break; // every store of the batch failed, or was registered here again meanwhile
    }
    return { moved, empty: false, errors };
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
    if (oldestUnfolded === undefined && epoch !== null && (await this.redis.exists(this.keys.bucketRows(store, epoch))))
      oldestUnfolded = Number(epoch);
    return {
      rows,
      entries: Math.max(0, Number(entries ?? 0)),
      oldestDirty: firstDirty.length === 2 ? Number(firstDirty[1]) : undefined,
      oldestUnfolded,
    };
  }

  /**
   * Publishes the store's backlog to its work-set shard (what the gauges read). With `mark` (the sealer), a store
   * with nothing left and no apply since `mark` leaves the work set. Returns 'absent' when the store is not in
   * the work set (then nothing is published), 'published' or 'retired'.
   */
  async publishBacklog(store: string, b: StoreBacklog, mark?: string, visitAt?: number): Promise<'absent' | 'published' | 'retired'> {
    return (await this.publishBacklogs(this.shardOf(store), [{ store, backlog: b, mark, visitAt }]))[0]!;
  }

  /**
   * publishBacklog for many stores of one work-set shard in one call (the sealer's, per batch of stores). With
   * `visitAt` (the sealer), the store's next visit time becomes `visitAt`, or only moves earlier when an apply
   * bumped its mark since `mark` was read.
   */
  async publishBacklogs(shard: number, items: readonly PublishItem[]): Promise<Published[]> {
    const out: Published[] = [];
    for (let i = 0; i < items.length; i += PUBLISH_STORES) out.push(...(await this.publishCall(shard, items.slice(i, i + PUBLISH_STORES))));
    return out;
  }

  /**
   * publishBacklogs, store by store: a store PUBLISH_BACKLOG refuses on its own account (a backlog that is not
   * non-negative integers, checked here before anything is sent; the shard's stats of that store holding a
   * non-integer) gets its error in its place, and the other stores are published. A refusal that is no one store's
   * (a key of the shard of another type, a non-integer total: the same refusal for any part of the call) and any
   * other error (Redis unreachable) throw, as publishBacklogs. Costs publishBacklogs' calls when nothing is refused;
   * a refused call is tried again in halves, down to the stores refused.
   */
  async publishBacklogsEach(shard: number, items: readonly PublishItem[]): Promise<Array<Published | Error>> {
    const out = new Array<Published | Error>(items.length);
    const sendable: number[] = [];
    items.forEach((item, i) => {
      const bad = backlogArgsProblem(item);
      if (bad === undefined) sendable.push(i);
      else out[i] = new BucketsError('TALLY_ERR_ARGUMENT', `store ${item.store}: backlog not published: ${bad}`);
    });
    /** Publishes the stores `at` in one call: undefined, or the script's refusal (nothing written). */
    const attempt = async (at: readonly number[]): Promise<Error | undefined> => {
      try {
        const r = await this.publishCall(
          shard,
          at.map((i) => items[i]!),
        );
        r.forEach((x, j) => (out[at[j]!] = x));
        return undefined;
      } catch (err) {
        if (err instanceof ReplyError) return err as Error;
        throw err;
      }
    };
    const split = async (at: readonly number[], refused: Error): Promise<void> => {
      if (at.length === 1) {
        out[at[0]!] = refused;
        return;
      }
      const halves = [at.slice(0, at.length >> 1), at.slice(at.length >> 1)];
      const errors = await Promise.all(halves.map(attempt));
      // Refused alike whatever the stores: not one store's refusal (a store's names the store).
      if (errors.every((e) => e?.message === refused.message)) throw refused;
      await Promise.all(halves.map((h, k) => (errors[k] ? split(h, errors[k]) : undefined)));
    };
    for (let i = 0; i < sendable.length; i += PUBLISH_STORES) {
      const at = sendable.slice(i, i + PUBLISH_STORES);
      const refused = await attempt(at);
      if (refused) await split(at, refused);
    }
    return out;
  }

  /** One PUBLISH_BACKLOG call (at most PUBLISH_STORES stores): refused whole, or done whole. */
  private async publishCall(shard: number, items: readonly PublishItem[]): Promise<Published[]> {
    const args: Array<string | number> = [];
    for (const { store, backlog: b, mark, visitAt, epoch } of items) {
      args.push(
        store,
        b.rows,
        b.entries,
        b.oldestDirty ?? '',
        b.oldestUnfolded ?? '',
        mark ?? '',
        visitAt === undefined ? '' : Math.floor(visitAt),
        epoch ?? '',
      );
    }
    const [active, stats, totals, oldestDirty, oldestUnfolded, next] = this.workKeys(shard);
    const r = await this.run(
      PUBLISH_BACKLOG,
      { active, stats, totals, oldestDirty, oldestUnfolded, next },
      { channel: this.epochChannel },
      { args },
    );
    return r.map((x) => (Number(x) === 2 ? 'retired' : Number(x) === 1 ? 'published' : 'absent'));
  }

  /**
   * Moves the next visit time of the stores of a work-set shard to `visitAt` where it is earlier (never earlier, and
   * a store not in the work set stays out): what the sealer does for the stores it set aside, which are then
   * visited again when `visitAt` comes, behind the stores that have waited longer. One command per 1,000 stores.
   */
  async deferVisits(shard: number, stores: readonly string[], visitAt: number): Promise<void> {
    const next = this.workKeys(shard)[5];
    for (let i = 0; i < stores.length; i += 1000) {
      await this.redis.zadd(next, 'XX', 'GT', ...stores.slice(i, i + 1000).flatMap((s) => [Math.floor(visitAt), s]));
    }
  }

  /**
   * Keeps this instance's open-bucket seqs current with the seals of other instances' sealers: they announce the
   * seqs their visits set (publishBacklogs with `epoch`), and this instance remembers them, so its next apply to a
   * store sealed elsewhere names the new open bucket's keys at once instead of paying a stale reply and a retry. A
   * hint only: a lost or late one costs that retry, nothing else. `subscriber` is a connection of its own (it enters
   * subscriber mode). Resolves once subscribed.
   */
  async followEpochs(subscriber: Redis | Cluster): Promise<void> {
    subscriber.on('message', (channel: string, message: string) => {
      if (channel !== this.epochChannel) return;
      let flat: unknown;
      try {
        flat = JSON.parse(message);
      } catch {
        return;
      }
      if (!Array.isArray(flat)) return;
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const [store, epoch] = [flat[i], flat[i + 1]];
        if (typeof store !== 'string' || typeof epoch !== 'string') continue;
        const known = this.epochs.get(store);
        if (known === undefined || Number(epoch) > Number(known)) this.remember(this.epochs, store, epoch);
      }
    });
    await subscriber.subscribe(this.epochChannel);
  }

  /**
   * A sealer's visit of a store in one round trip: seals the open bucket when it is due (as seal()) and reports
   * what is left (see Visit). visitMany for one store.
   */
  async visit(store: string, opts: VisitOptions): Promise<Visit> {
    return (await this.visitMany([store], opts))[0]!;
  }

  /**
   * visit() for many stores in one round trip per Redis node (VISIT calls pipelined; one more round for the stores
   * whose open bucket this instance did not know). Throws the first store's error, after the other stores' visits
   * (visitEach: each store's error in its place).
   */
  async visitMany(stores: readonly string[], opts: VisitOptions): Promise<Visit[]> {
    const out = await this.visitEach(stores, opts);
    const failed = out.find((v) => v instanceof Error);
    if (failed) throw failed;
    return out as Visit[];
  }

  /**
   * visitMany, store by store: a store whose VISIT failed (a key of the wrong type, a Redis node refusing writes, its
   * open bucket moving during every try) gets its error in its place, and the other stores' visits stand (the sealer
   * sets a failed store aside and works on the rest of its batch).
   */
  async visitEach(stores: readonly string[], opts: VisitOptions): Promise<Array<Visit | Error>> {
    const out = new Array<Visit | Error>(stores.length);
    let pending = stores.map((_, i) => i);
    const args = { now: opts.now, minAgeMs: opts.minAgeMs, dueLimit: DUE_LIMIT, pksLimit: ROWS_PER_FOLD * 8, leaseMs: opts.leaseMs ?? 0 };
    for (let attempt = 0; attempt <= STALE_RETRIES && pending.length > 0; attempt++) {
      const calls = pending.map((i) => {
        const store = stores[i]!;
        const epoch = this.epochs.get(store) ?? '';
        const keys = {
          ...this.openKeys(store, epoch),
          sealed: this.keys.sealed(store),
          dirty: this.keys.dirty(store),
          counts: this.keys.counts(store),
          due: this.keys.due(store),
          tombstone: this.keys.tombstone(store),
          dueLater: this.keys.dueLater(store),
        };
        return { keys, args: { ...args, epoch } };
      });
      const replies = await runScripts(this.redis, VISIT, calls);
      const stale: number[] = [];
      replies.forEach((r, j) => {
        const i = pending[j]!;
        if (r instanceof Error) out[i] = r;
        else if (r[0] === 0) {
          this.remember(this.epochs, stores[i]!, r[1]);
          stale.push(i);
        } else {
          this.remember(this.epochs, stores[i]!, r[8]);
          out[i] = visitOf(r, opts.now);
        }
      });
      pending = stale;
    }
    for (const i of pending) out[i] = new Error(`store ${stores[i]}: the open bucket moved ${STALE_RETRIES + 1} times during one visit`);
    return out;
  }

  /** The installation's backlog: one bounded read per work-set shard (sums and minimums kept by publishBacklog). */
  async backlog(): Promise<Backlog> {
    const out: Backlog = { rows: 0, entries: 0, oldestDirty: undefined, oldestUnfolded: undefined };
    const min = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : Math.min(a, b));
    await Promise.all(
      Array.from({ length: this.shards }, async (_, shard) => {
        const [, , totals, od, ou] = this.workKeys(shard);
        const res = await this.redis
          .pipeline()
          .hmget(totals, 'rows', 'entries')
          .zrange(od, 0, 0, 'WITHSCORES')
          .zrange(ou, 0, 0, 'WITHSCORES')
          .exec();
        const [t, d, u] = (res ?? []).map(([err, v]) => {
          if (err) throw err;
          return v;
        }) as [Array<string | null>, string[], string[]];
        out.rows += Math.max(0, Number(t[0] ?? 0));
        out.entries += Math.max(0, Number(t[1] ?? 0));
        out.oldestDirty = min(out.oldestDirty, d.length === 2 ? Number(d[1]) : undefined);
        out.oldestUnfolded = min(out.oldestUnfolded, u.length === 2 ? Number(u[1]) : undefined);
      }),
    );
    return out;
  }

  /** The open bucket's epoch key and the row set of bucket `epoch` (a placeholder name when the store has none). */
  private openKeys(store: string, epoch: string): { epoch: string; rows: string } {
    return { epoch: this.keys.epoch(store), rows: this.keys.bucketRows(store, epoch) };
  }

  /** Seals the open bucket if it has data and is at least minAgeMs old. Returns the sealed seq. */
  async seal(store: string, opts: { now: number; minAgeMs: number }): Promise<number | undefined> {
    const sealed = await this.withEpoch<string>(store, '', async (epoch) => {
      const r = await this.run(
        SEAL,
        { ...this.openKeys(store, epoch), sealed: this.keys.sealed(store), tombstone: this.keys.tombstone(store) },
        { now: opts.now, minAgeMs: opts.minAgeMs, epoch },
      );
      if (r[0] === 0) return { stale: r[1] };
      this.remember(this.epochs, store, r[2]);
      return { ok: r[1] };
    });
    return sealed === '' ? undefined : Number(sealed);
  }

  /**
   * Folds every sealed bucket of the store, oldest first, into row outboxes; foldedThrough advances only
   * when a bucket is folded completely. Safe to run concurrently with another folder (each row fold is
   * atomic and idempotent). Returns the buckets finished and rows moved by this call.
   */
  async foldSealed(store: string, opts: { now: number; rowsPerCall?: number }): Promise<{ buckets: number; rows: number }> {
    const batch = opts.rowsPerCall ?? ROWS_PER_FOLD;
    let buckets = 0;
    let rows = 0;
    for (;;) {
      const head = await this.redis.lindex(this.keys.sealed(store), 0);
      if (head === null) break;
      let finished = false;
      for (;;) {
        const pks = await this.redis.srandmember(this.keys.bucketRows(store, head), batch);
        if (pks.length === 0) break;
        const [moved, done] = await this.foldRows(store, head, pks, opts.now);
        rows += moved;
        finished ||= done === 1;
      }
      if (finished) {
        buckets++;
        continue;
      }
      const done = Number(
        await this.run(
          FINISH_FOLD,
          {
            sealed: this.keys.sealed(store),
            rows: this.keys.bucketRows(store, head),
            folded: this.keys.folded(store),
            tombstone: this.keys.tombstone(store),
          },
          { seq: head },
        ),
      );
      if (done === 1) buckets++;
      // 0: another folder finished it; -1: rows reappeared in a race with another folder: loop again.
    }
    return { buckets, rows };
  }

  /**
   * Folds, for each item, the rows `pks` of the store's sealed bucket `seq` — all its rows, as VISIT reported them on
   * sealing it — in as few FOLD calls as ROWS_PER_FOLD allows, the last of which finishes the bucket and reports what
   * the store has left (as visit() does, its due rows leased for `leaseMs`: VisitOptions; an unfinished bucket's
   * last call leases nothing, its report being dropped). Every item's calls go in one round trip per Redis node (each
   * store's in order). Per item: undefined when the bucket was not finished by these calls (another folder is at it, or it is
   * not the oldest sealed one): fold it with foldSealed then. Throws the first error, after the other items' folds
   * (foldVisitedEach: each item's error in its place).
   */
  async foldVisitedMany(
    items: ReadonlyArray<{ store: string; seq: number; pks: readonly string[] }>,
    now: number,
    leaseMs = 0,
  ): Promise<Array<FoldReport | undefined>> {
    const out = await this.foldVisitedEach(items, now, leaseMs);
    const failed = out.find((r) => r instanceof Error);
    if (failed) throw failed;
    return out as Array<FoldReport | undefined>;
  }

  /**
   * foldVisitedMany, item by item: an item one of whose FOLD calls failed gets the first such error in its place (its
   * bucket stays sealed, not finished: the store's next visit folds it from the head of its sealed list, and the rows
   * these calls did fold are not folded twice), and the other items' folds stand.
   */
  async foldVisitedEach(
    items: ReadonlyArray<{ store: string; seq: number; pks: readonly string[] }>,
    now: number,
    leaseMs = 0,
  ): Promise<Array<FoldReport | undefined | Error>> {
    const calls: Array<ScriptCall<FoldKey, FoldArg>> = [];
    const lastCall: number[] = [];
    for (const { store, seq, pks } of items) {
      for (let i = 0; i < pks.length; i += ROWS_PER_FOLD) {
        calls.push(this.foldCall(store, String(seq), pks.slice(i, i + ROWS_PER_FOLD), now, i + ROWS_PER_FOLD >= pks.length, leaseMs));
      }
      lastCall.push(calls.length - 1);
    }
    const replies = await runScripts(this.redis, FOLD, calls);
    let first = 0;
    return items.map((_, k) => {
      const mine = replies.slice(first, lastCall[k]! + 1);
      first = lastCall[k]! + 1;
      const failed = mine.find((r) => r instanceof Error);
      if (failed) return failed;
      if (mine.length === 0) return undefined; // no rows given: nothing folded
      let rows = 0;
      for (const c of mine) rows += (c as FoldReply)[0];
      const r = mine[mine.length - 1] as FoldReply;
      if (r[1] !== 1 || r.length !== 9) return undefined;
      const [, , dirty, firstDirty, entries, head, unfolded, due, nextDue] = r;
      const opt = (v: string) => (v === '' ? undefined : Number(v));
      return {
        rows,
        backlog: { rows: Number(dirty), entries: Number(entries), oldestDirty: opt(firstDirty), oldestUnfolded: opt(unfolded) },
        due: dueList(due, now),
        sealedHead: opt(head),
        nextDue: opt(nextDue),
      };
    });
  }

  /** One FOLD call for rows of sealed bucket `seq` (a row folded meanwhile by another folder is skipped by FOLD). */
  private async foldRows(store: string, seq: string, pks: readonly string[], now: number): Promise<FoldReply> {
    const c = this.foldCall(store, seq, pks, now, false, 0);
    return this.run(FOLD, c.keys, c.args, c.tail);
  }

  private foldCall(
    store: string,
    seq: string,
    pks: readonly string[],
    now: number,
    report: boolean,
    leaseMs: number,
  ): ScriptCall<FoldKey, FoldArg> {
    const keys: string[] = [];
    const args: Array<string | number> = [];
    for (const pk of pks) {
      keys.push(this.keys.bucket(store, seq, pk), this.keys.outbox(store, pk));
      args.push(pk, ...policyArgs(this.rules.policyOfPk(pk), store));
    }
    const openEpoch = this.epochs.get(store) ?? '';
    return {
      keys: {
        rows: this.keys.bucketRows(store, seq),
        dirty: this.keys.dirty(store),
        due: this.keys.due(store),
        counts: this.keys.counts(store),
        sealed: this.keys.sealed(store),
        folded: this.keys.folded(store),
        epoch: this.keys.epoch(store),
        openRows: this.keys.bucketRows(store, openEpoch),
        tombstone: this.keys.tombstone(store),
        dueLater: this.keys.dueLater(store),
      },
      args: { seq, now, openEpoch, report: report ? '1' : '0', dueLimit: DUE_LIMIT, leaseMs, rowCount: pks.length },
      tail: { keys, args },
    };
  }

  /**
   * A row's flush time (ms) by its policy, or undefined when none is set: its time in `dueLater` when a fold moved it
   * past the row's alarm in `due`, else that alarm (see DUE_LIST).
   */
  async flushTime(store: string, pk: string): Promise<number | undefined> {
    const [later, alarm] = await Promise.all([this.redis.hget(this.keys.dueLater(store), pk), this.redis.zscore(this.keys.due(store), pk)]);
    if (alarm === null) return undefined;
    return later === null ? Number(alarm) : Math.max(Number(alarm), Number(later));
  }

  /**
   * Rows whose flush is due at `now`, with the time of their oldest unwritten count (among the first `limit` alarms
   * that fired; an idle row whose flush time moved past its alarm is not due: a visit re-arms it, see DUE_LIST).
   */
  async dueRows(store: string, now: number, limit = DUE_LIMIT): Promise<DueRow[]> {
    const pks = await this.redis.zrangebyscore(this.keys.due(store), '-inf', now, 'LIMIT', 0, limit);
    if (pks.length === 0) return [];
    const later = await this.redis.hmget(this.keys.dueLater(store), ...pks);
    const due = pks.filter((_, i) => later[i] === null || !(Number(later[i]) > now));
    if (due.length === 0) return [];
    const firsts = await this.redis.zmscore(this.keys.dirty(store), ...due);
    return due.map((pk, i) => ({ pk, firstDirty: firsts[i] === null ? now : Number(firsts[i]) }));
  }

  /** The writer's read: the row's outbox entries of completely folded buckets. */
  async readOutbox(store: string, pk: string): Promise<OutboxRead> {
    const flat = await this.run(
      READ_OUTBOX,
      { folded: this.keys.folded(store), outbox: this.keys.outbox(store, pk), tombstone: this.keys.tombstone(store) },
      {},
    );
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
   * Deletes applied outbox entries (with their limbs), drops the row's cache and bumps its cache version when it is a
   * visitor row (the only rows whose history queries cache: segment rules, libs/query segments.ts), and reschedules
   * what is left. Returns the outbox fields left.
   */
  async ackOutbox(store: string, pk: string, fields: readonly string[], now: number): Promise<number> {
    const limbs = fields.flatMap((f) => LIMB_NAMES.map((l) => f + l));
    const [policyKind, a, b] = policyArgs(this.rules.policyOfPk(pk), store);
    // By the pk, not the rules: a segment evaluation reads the row of pkOf(store, 'visitor', [id]) whatever rules run.
    const historyCached = parsePk(pk).entity === 'visitor' ? '1' : '0';
    const keys = {
      outbox: this.keys.outbox(store, pk),
      cacheVersion: this.keys.cacheVersion(store, pk),
      cache: this.keys.cache(store, pk),
      dirty: this.keys.dirty(store),
      due: this.keys.due(store),
      counts: this.keys.counts(store),
      tombstone: this.keys.tombstone(store),
      dueLater: this.keys.dueLater(store),
    };
    return Number(
      await this.run(
        ACK_OUTBOX,
        keys,
        { pk, now, cacheVersionTtlSeconds: this.cacheVersionTtlSeconds, policyKind, a, b, historyCached },
        { args: limbs },
      ),
    );
  }

  /**
   * One atomic read of everything in Redis not yet in DynamoDB for the given rows of one store (and, with
   * withCache, each row's cached DynamoDB items and cache version; where `knownVersions[i]` is still the
   * row's version, the cache comes back as `=` so a caller holding it parsed need not transfer it again).
   */
  async snapshot(
    store: string,
    pks: readonly string[],
    withCache = false,
    knownVersions: ReadonlyArray<string | undefined> = [],
  ): Promise<RowSnapshot[]> {
    if (pks.length === 0) return [];
    const perPk: string[] = [];
    pks.forEach((pk, i) => perPk.push(pk, knownVersions[i] ?? ''));
    let layout = { epoch: this.epochs.get(store) ?? '', sealed: this.sealedSeqs.get(store) ?? [] };
    let raw: Array<[string[], string | null, string]> | undefined;
    for (let i = 0; i <= STALE_RETRIES && !raw; i++) {
      const seqs = layout.epoch === '' ? layout.sealed : [...layout.sealed, layout.epoch];
      const keys = pks.flatMap((pk) => [
        this.keys.outbox(store, pk),
        this.keys.cacheVersion(store, pk),
        this.keys.cache(store, pk),
        ...seqs.map((seq) => this.keys.bucket(store, seq, pk)),
      ]);
      const r = await this.run(
        SNAPSHOT,
        { sealed: this.keys.sealed(store), epoch: this.keys.epoch(store) },
        { withCache: withCache ? '1' : '0', epoch: layout.epoch, sealedCount: layout.sealed.length },
        { keys, args: [...layout.sealed, ...perPk] },
      );
      if (r[0] === 1) raw = r[1];
      else {
        const [, epoch, ...sealed] = r;
        layout = { epoch, sealed };
        this.remember(this.epochs, store, epoch);
        this.remember(this.sealedSeqs, store, sealed);
      }
    }
    if (!raw) throw new SnapshotContendedError(store, STALE_RETRIES + 1);
    return raw.map(([flat, cache, version], i) => {
      const entries: Entry[] = [];
      for (const [field, value] of combineLimbs(flat)) entries.push({ ...parseOutboxField(field), value });
      return { pk: pks[i]!, entries, cache: cache ?? undefined, cacheVersion: String(version) };
    });
  }

  /** Stores a row's DynamoDB items in the cache unless the writer acked entries since `version` was read. */
  async fillCache(store: string, pk: string, version: string, json: string, ttlSeconds: number): Promise<boolean> {
    const keys = {
      cacheVersion: this.keys.cacheVersion(store, pk),
      cache: this.keys.cache(store, pk),
      tombstone: this.keys.tombstone(store),
    };
    return Number(await this.run(FILL_CACHE, keys, { version, json, ttlSeconds })) === 1;
  }

  /**
   * The highest-ranked members of a ranked entity for a metric over the given days, from every bucket, the open
   * one included (APPLY ranks ranked rows as it counts them). Values are for ordering; read exact counts with a query.
   * At most `limit` members: highest score first, equal scores by member ascending, so a cut inside a tie keeps the
   * lowest members (the order top lists answer ties in) and a smaller limit gives a prefix of a larger one's list.
   * Scores of 2^53 or more are inexact: at such a cut, every member scored within 2^-14 (relative) below it comes too,
   * more than `limit` (scripts.ts INEXACT_MARGIN), so that exact values read for them can order them.
   * The days' rankings holding more than `maxMembers` members in all (their ZCARDs summed; a member of several days
   * counts on each) throws a TopTooLargeError before anything is unioned or written: the union would hold up Redis.
   */
  async top(
    store: string,
    entity: string,
    metric: string,
    dayKeys: readonly string[],
    limit: number,
    maxMembers = TOP_MAX_MEMBERS,
  ): Promise<Array<{ member: string; score: number }>> {
    const rankings = dayKeys.map((d) => this.keys.rank(store, d, metric, entity));
    const tmp = `${this.keys.tag(store)}tmp:${randomUUID()}`;
    let flat: string[];
    try {
      flat = await this.run(TOP, { tmp }, { limit, maxMembers }, { keys: rankings });
    } catch (err) {
      const members = /^TALLY_ERR_TOP_TOO_LARGE (\d+)/.exec((err as Error).message ?? '')?.[1];
      if (members !== undefined) throw new TopTooLargeError(store, Number(members), maxMembers, { cause: err });
      throw err;
    }
    const out: Array<{ member: string; score: number }> = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ member: flat[i]!, score: Number(flat[i + 1]) });
    return out.sort((a, b) => b.score - a.score || (a.member < b.member ? -1 : a.member > b.member ? 1 : 0));
  }

  /**
   * The daily ranking zsets of `dayKeys` that row `pk` can be a member of, and its member in them: one per unkeyed
   * metric its entity counts (applyRows ranks a row's fields without a sub-key); undefined for a row of an entity the
   * rules do not rank.
   */
  rankingsOf(store: string, pk: string, dayKeys: readonly string[]): { member: string; keys: string[] } | undefined {
    const rank = this.rules.rankOfPk(pk);
    if (!rank) return undefined;
    const metrics = new Set<string>();
    for (const type of this.rules.eventTypes.values())
      for (const c of type.counters) if (c.entity === rank.entity && c.by === undefined) metrics.add(c.attrMetric);
    return { member: rank.member, keys: dayKeys.flatMap((d) => [...metrics].map((m) => this.keys.rank(store, d, m, rank.entity))) };
  }

  async touchCache(store: string, pk: string, ttlSeconds: number): Promise<void> {
    await this.run(TOUCH_CACHE, { cache: this.keys.cache(store, pk) }, { ttlSeconds });
  }
}
