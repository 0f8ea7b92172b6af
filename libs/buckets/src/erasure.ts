import { WORK_SUFFIX, dayKey, fromEpochDay, keptForWindow, keySlot, publishedWindowSeconds } from '@tally/key-layout';
import type { Cluster, Redis } from 'ioredis';
import { RANK_TTL_DAYS, type BucketStore } from './bucket-store';
import { defineScript, runScript, runScripts } from './script-table';
import { readTopHistory } from './top-history';

/**
 * ERASE one row (a visitor) from Redis and keep it erased: its outbox, its counts in the open and sealed buckets
 * (and its place in their row sets), its distinct-count sketches (`ur` and each unwritten field's `us`, `uh`: a
 * visitor entity given a `distinct` metric has its own), its dirty and due marks, its cached history (the cache
 * version is bumped, so a query that read DynamoDB before cannot store what it read), and an entry in the erased
 * rows until `untilMs`, which makes APPLY drop the row's counts and SKETCH_ADD its members (TOMBSTONES in scripts.ts).
 * The erased rows are a zset pk -> until (ms): the entries whose time has passed at `now` are pruned here (a hash
 * of an earlier version is made a zset of its live entries), so a store that erases more often than the window does
 * not keep every erased pk for ever; an erasure never moves a row's time earlier. The days of the outbox counts it
 * deletes are added to the row's field of the erased rows' days (`erasedDays`, a hash pk -> `YYYY-DDD,…`), kept
 * and pruned with the row's entry (same TTL): a call cut short after this script (before the caller put tombstone
 * items on those days' DynamoDB items) loses nothing, as the next call gets them back. That field is set by every
 * call, with no day at all (`''`) too: it is also the mark of an erasure of the row not finished, until the caller
 * that finished one clears it (BucketEraser.forgetErasedDays), so a call that finds it (while the row's entry lives)
 * is finishing an earlier one, whatever that one removed. Idempotent.
 * KEYS: erased, outbox, cache, cacheVersion, counts, dirty, due, sealed, epoch, dueLater, sketchRows (`ur`),
 * erasedDays, then per bucket seq (the sealed ones, then the open one) its hash of the row and its row set, then per
 * sketch field (the members of `ur` the caller read) its `us` and `uh`. ARGV: pk, untilMs, ttlSeconds (of the erased
 * rows: at least this from now), cacheVersionTtlSeconds, sealedCount, now (ms), sketchCount, then the seqs ('' for no
 * open one), then the sketch fields. Returns {1, outbox counts, bucket counts (counts, not their limbs), cached
 * (0|1), sketch fields, epoch or '', unfinished (0|1: the row's field was in `erasedDays`, its entry live), the days
 * (`YYYY-DDD`, each once) of the outbox counts this call and the earlier erasures of the row (while its entry lives)
 * deleted...}, or {0, epoch or '', sealed seqs...} (nothing written) when
 * the seqs or the sketch fields are not the store's (the caller reads `ur` again). Every read and check before the
 * first write.
 */
export const ERASE_ROW = defineScript<[1, number, number, number, number, string, number, ...string[]] | [0, string, ...string[]]>()({
  name: 'ERASE_ROW',
  shebang: '#!lua',
  keys: ['erased', 'outbox', 'cache', 'cacheVersion', 'counts', 'dirty', 'due', 'sealed', 'epoch', 'dueLater', 'sketchRows', 'erasedDays'],
  args: ['pk', 'untilMs', 'ttlSeconds', 'cacheVersionTtlSeconds', 'sealedCount', 'now', 'sketchCount'],
  body: `
local function expectType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want) end
end
-- Adds \`day\` to the list \`days\` (also a set of them) unless it holds it.
local function addDay(days, day)
  if day and day ~= '' and not days[day] then
    days[day] = true
    table.insert(days, day)
  end
end
-- The counts among a hash's fields: a count's field has that many bars, its high limbs one more (isEntry, scripts.ts).
-- With \`days\`, the day of each count (an outbox field \`<seq>|<day>|<metric>\`) is added to it, once.
local function countsOf(key, bars, days)
  local n = 0
  for _, f in ipairs(redis.call('HKEYS', key)) do
    local _, b = string.gsub(f, '|', '')
    if b == bars then
      n = n + 1
      if days then addDay(days, string.match(f, '^[^|]*|([^|]*)|')) end
    end
  end
  return n
end
if not (string.match(A.untilMs, '^%d+$') and string.match(A.ttlSeconds, '^[1-9]%d*$') and string.match(A.now, '^%d+$')) then
  return redis.error_reply('TALLY_ERR_ARGUMENT until, ttl and now must be positive integers')
end
-- The bucket layout and the sketch fields the caller declared keys for: the sealed seqs, then the open one ('' =
-- none), then the row's unwritten sketch fields.
local sealed = redis.call('LRANGE', K.sealed, 0, -1)
local epoch = redis.call('GET', K.epoch) or ''
local n = tonumber(A.sealedCount)
local sketchCount = tonumber(A.sketchCount)
local same = #sealed == n and epoch == (ARGV[AR + n] or '')
for j = 1, n do same = same and sealed[j] == ARGV[AR + j - 1] end
expectType(K.sketchRows, 'set')
same = same and redis.call('SCARD', K.sketchRows) == sketchCount
for j = 1, sketchCount do same = same and redis.call('SISMEMBER', K.sketchRows, ARGV[AR + n + j]) == 1 end
if not same then
  local stale = {0, epoch}
  for _, seq in ipairs(sealed) do table.insert(stale, seq) end
  return stale
end
local bucketsEnd = #KEYS - 2 * sketchCount
-- Read phase.
local erasedAs = redis.call('TYPE', K.erased)['ok']
if erasedAs ~= 'none' and erasedAs ~= 'zset' and erasedAs ~= 'hash' then
  error('WRONGTYPE ' .. K.erased .. ' holds a ' .. erasedAs .. ', not a zset')
end
local legacy = erasedAs == 'hash' and redis.call('HGETALL', K.erased) or {}
local now = tonumber(A.now)
-- The erased rows' days: those of the rows whose entry the prune below drops go with it; this row's are kept while its
-- entry lives (its time is after now), and the days of the outbox erased now are added to them. The row's field there
-- at all (days or none) is an erasure of it not finished (\`unfinished\`).
expectType(K.erasedDays, 'hash')
local pruned = {}
local days = {}
local unfinished = 0
local daysKept = redis.call('EXISTS', K.erasedDays) == 1
-- With no erased row left (the zset expired) no row's days are kept.
local daysOfNone = daysKept and erasedAs == 'none'
if daysKept and erasedAs ~= 'none' then
  local entry
  if erasedAs == 'zset' then
    pruned = redis.call('ZRANGEBYSCORE', K.erased, '-inf', A.now)
    entry = redis.call('ZSCORE', K.erased, A.pk)
  else
    for j = 1, #legacy, 2 do
      local u = tonumber(legacy[j + 1])
      if not (u and u > now) then table.insert(pruned, legacy[j]) end
      if legacy[j] == A.pk then entry = legacy[j + 1] end
    end
  end
  entry = tonumber(entry or '')
  local held = entry and entry > now and redis.call('HGET', K.erasedDays, A.pk)
  if held then
    unfinished = 1
    for day in string.gmatch(held, '[^,]+') do addDay(days, day) end
  end
end
expectType(K.dirty, 'zset')
expectType(K.due, 'zset')
expectType(K.dueLater, 'hash')
expectType(K.counts, 'hash')
local outboxCounts = countsOf(K.outbox, 2, days)
local entries = redis.call('HGET', K.counts, 'entries')
if entries and not (string.match(entries, '^-?%d+$') and #entries < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.counts .. ' entries is not an integer')
end
local version = redis.call('GET', K.cacheVersion)
if version and not (string.match(version, '^%d+$') and #version < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.cacheVersion .. ' is not a cache version')
end
local bucketCounts = 0
for k = KR, bucketsEnd, 2 do
  bucketCounts = bucketCounts + countsOf(KEYS[k], 1)
  expectType(KEYS[k + 1], 'set')
end
local cached = redis.call('EXISTS', K.cache)
local ttl = redis.call('TTL', K.erased)
local keep = math.max(ttl, tonumber(A.ttlSeconds))
-- Write phase: commands that cannot fail on the keys checked above.
if erasedAs == 'hash' then
  redis.call('DEL', K.erased)
  for j = 1, #legacy, 2 do
    local u = tonumber(legacy[j + 1])
    if u and u > now then redis.call('ZADD', K.erased, string.format('%d', u), legacy[j]) end
  end
elseif erasedAs == 'zset' then
  redis.call('ZREMRANGEBYSCORE', K.erased, '-inf', A.now)
end
redis.call('ZADD', K.erased, 'GT', A.untilMs, A.pk)
-- Always: the prune may have emptied the zset, and the ZADD made it again with no TTL.
redis.call('EXPIRE', K.erased, keep)
if daysOfNone then redis.call('DEL', K.erasedDays) end
for j = 1, #pruned, 500 do redis.call('HDEL', K.erasedDays, unpack(pruned, j, math.min(j + 499, #pruned))) end
-- Days or none: the field marks the erasure unfinished until the caller clears it (forgetErasedDays).
redis.call('HSET', K.erasedDays, A.pk, table.concat(days, ','))
-- The same lifetime as the erased rows.
redis.call('EXPIRE', K.erasedDays, keep)
redis.call('DEL', K.outbox, K.cache)
for k = KR, bucketsEnd, 2 do
  redis.call('DEL', KEYS[k])
  redis.call('SREM', KEYS[k + 1], A.pk)
end
for k = bucketsEnd + 1, #KEYS do redis.call('DEL', KEYS[k]) end
redis.call('DEL', K.sketchRows)
redis.call('ZREM', K.dirty, A.pk)
redis.call('ZREM', K.due, A.pk)
redis.call('HDEL', K.dueLater, A.pk)
-- As ACK_OUTBOX: a version that expired restarts at now (ms), never at 1, which a query's history memo may hold.
if version then redis.call('INCR', K.cacheVersion) else redis.call('SET', K.cacheVersion, A.now) end
redis.call('EXPIRE', K.cacheVersion, A.cacheVersionTtlSeconds)
if redis.call('ZCARD', K.dirty) == 0 then
  redis.call('HDEL', K.counts, 'entries')
elseif entries then
  redis.call('HSET', K.counts, 'entries', string.format('%d', math.max(0, tonumber(entries) - outboxCounts)))
end
local reply = {1, outboxCounts, bucketCounts, cached, sketchCount, epoch, unfinished}
for _, day in ipairs(days) do table.insert(reply, day) end
return reply
`,
});

/**
 * UNRANK a member (an erased visitor) from daily ranking zsets (top lists) of one store: ZREM from each that holds it.
 * KEYS: the ranking zsets. ARGV: member. Every key's type is checked (ZSCORE) before the first write. Returns how many
 * held it. Idempotent.
 */
const UNRANK = defineScript<number>()({
  name: 'UNRANK',
  shebang: '#!lua',
  keys: [],
  args: ['member'],
  body: `
local held = {}
for k = KR, #KEYS do
  if redis.call('ZSCORE', KEYS[k], A.member) then held[#held + 1] = KEYS[k] end
end
for _, key in ipairs(held) do redis.call('ZREM', key, A.member) end
return #held
`,
});

/** How long a row's cache version outlives its last bump (as BucketStore's default). */
const CACHE_VERSION_TTL_SECONDS = 2 * 86_400;

/**
 * The most days late an event is accepted: LATENESS_HORIZON_DAYS' maximum (libs/config). A late event ranks its own
 * day, whose ranking then lives TOP_HISTORY_DAYS from that apply.
 */
const MAX_LATENESS_DAYS = 3_650;

/** Ranking zsets one UNRANK call takes: an erasure holds Redis up for a thousand ZSCOREs at a time, not for all. */
const UNRANK_KEYS_PER_CALL = 1_000;

/** What erasing one row removed from Redis. */
export interface RowErasure {
  /** Outbox entries (counts folded but not yet in DynamoDB; not their limbs). */
  outboxEntries: number;
  /** Counts of the open and sealed buckets (not yet folded; not their limbs). */
  bucketEntries: number;
  /** Whether a cached history was dropped. */
  cachedHistory: boolean;
  /** The row's own distinct-count sketches not yet in DynamoDB (one per day and metric), when its entity has any. */
  sketches: number;
  /** The daily rankings (top lists) the row was taken out of (unrankRow), when the rules rank its entity. */
  rankings: number;
  /**
   * The store's epoch (the open bucket's seq) the erasure read, undefined when it had none: every bucket a count of
   * the row could be in before the erasure has a lower seq, and every bucket after it this one or a higher.
   */
  epoch: number | undefined;
  /**
   * The days (`YYYY-DDD`) of the outbox counts erased, by this call and by the earlier erasures of the row while its
   * erased-rows entry lives (ERASE_ROW keeps them in `erasedDays`, until forgetErasedDays): a flush that read them
   * before the erasure writes them to the items of those days (the month items and TOTAL), which need not exist in
   * DynamoDB yet. So a call cut short before those items became tombstones is finished by the next one, which gets
   * the days back.
   */
  outboxDays: string[];
  /**
   * Whether an earlier erasure of the row had not finished: ERASE_ROW found the row's field in `erasedDays` (which
   * every erasure of the row sets, with its days or none, and forgetErasedDays clears) while its erased-rows entry
   * lives. An erasure cut short (a 503, an error, a crash) anywhere after its ERASE_ROW leaves it, whatever it removed.
   */
  unfinished: boolean;
}

/** What a flush of a deleted store may still hold (BucketEraser.unwritten). */
interface StoreUnwritten {
  /** The store's epoch (the open bucket's seq), undefined when it has none. */
  epoch: number | undefined;
  /**
   * Per row with outbox entries, the days (`YYYY-DDD`) of those entries; and per erased row, the days of the outbox
   * counts its erasures deleted (ERASE_ROW's `erasedDays`: an erasure cut short may not have fenced them).
   */
  outboxDays: Map<string, string[]>;
}

/**
 * The Redis side of deleting a store and of erasing a visitor (docs/DESIGN.md "Privacy"): tombstones that the
 * scripts honour, and the deletion of a store's keys on one Redis or, on a Redis Cluster, in the store's slot (all
 * of a store's keys share its hash tag).
 */
export class BucketEraser {
  private readonly redis: Redis | Cluster;
  private readonly buckets: BucketStore;

  constructor(opts: { redis: Redis | Cluster; buckets: BucketStore }) {
    this.redis = opts.redis;
    this.buckets = opts.buckets;
  }

  /**
   * Sets (or renews) the store's tombstone: from now on every writing script of the store is a no-op. It is kept for
   * `ttlSeconds` (the dedupe window) plus the window's slack (libs/key-layout dedupe-window.ts), as the batches' dedupe records are.
   */
  async markStoreDeleted(store: string, ttlSeconds: number): Promise<void> {
    await this.redis.set(this.buckets.keys.tombstone(store), String(Date.now()), 'EX', keptForWindow(ttlSeconds));
  }

  /** The aggregators' DEDUPE_WINDOW_SECONDS as they publish it in Redis (libs/key-layout `dedupeWindow`), if they do. */
  async publishedDedupeWindow(): Promise<number | undefined> {
    return publishedWindowSeconds(await this.redis.get(this.buckets.keys.dedupeWindow));
  }

  /**
   * Deletes every key of the store but its tombstone (buckets, outboxes, dedupe records, caches, rankings, counts)
   * and takes the store out of its work-set shard. Returns the number of keys deleted. Idempotent.
   */
  async deleteStoreKeys(store: string): Promise<number> {
    const tag = this.buckets.keys.tag(store);
    // The tombstone stays; so do a work-set shard's keys, which share the tag of a store whose id is the shard's tag
    // (`t:w0` under KEY_PREFIX `t`: refused for new stores, libs/key-layout sharesInternalHashTag, but one created
    // before that may exist). No key of a store has a work-set key's name.
    const keep = new Set([this.buckets.keys.tombstone(store), ...Object.values(WORK_SUFFIX).map((s) => tag + s)]);
    const mine = (keys: string[]) => keys.filter((k) => k.startsWith(tag) && !keep.has(k));
    const deleted = this.redis.isCluster
      ? await this.deleteInSlot(this.redis as Cluster, keySlot(tag), tag, mine)
      : await this.scanDelete(this.redis as Redis, tag, mine);
    const active = this.buckets.keys.work(this.buckets.shardOf(store)) + WORK_SUFFIX.active;
    const mark = await this.redis.zscore(active, store);
    if (mark !== null) {
      // Nothing is left: publishing an empty backlog with the current mark retires the store (and keeps the totals right).
      await this.buckets.publishBacklog(store, { rows: 0, entries: 0, oldestDirty: undefined, oldestUnfolded: undefined }, mark);
    }
    return deleted;
  }

  /**
   * Deletes the keys of `tag` (one slot) that `mine` picks, on a Redis Cluster: on the slot's master first, then on the
   * others (a slot being migrated has keys on two), in passes until one deletes nothing and the slot's master is the
   * same after it as before it, so a reshard during a pass leaves no key on a master already read. Each node is read
   * with SCAN (linear; CLUSTER GETKEYSINSLOT, with no cursor, would read a slot shared with a busy store's keys over
   * and over). The UNLINKs go through the cluster client, which follows a migration's MOVED, ASK and TRYAGAIN replies.
   */
  private async deleteInSlot(cluster: Cluster, slot: number, tag: string, mine: (keys: string[]) => string[]): Promise<number> {
    const master = async () => {
      await new Promise<void>((resolve, reject) => cluster.refreshSlotsCache((err) => (err ? reject(err) : resolve())));
      return cluster.slots[slot]?.[0];
    };
    const name = (node: Redis) => `${node.options.host}:${node.options.port}`;
    let deleted = 0;
    for (let before = await master(); ;) {
      let pass = 0;
      const masters = cluster.nodes('master');
      for (const node of [...masters.filter((n) => name(n) === before), ...masters.filter((n) => name(n) !== before)])
        pass += await this.scanDelete(node, tag, mine);
      deleted += pass;
      const after = await master();
      if (pass === 0 && after === before) return deleted;
      before = after;
    }
  }

  /** SCANs `node` for the keys of `tag` and UNLINKs those `mine` picks (through this.redis); how many went. */
  private async scanDelete(node: Redis, tag: string, mine: (keys: string[]) => string[]): Promise<number> {
    let deleted = 0;
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${tag}*`, 'COUNT', 1000);
      cursor = next;
      deleted += await this.unlink(mine(keys));
    } while (cursor !== '0');
    return deleted;
  }

  /** UNLINKs keys of one slot (so a multi-key UNLINK is valid on a cluster too), 500 at a time. */
  private async unlink(keys: string[]): Promise<number> {
    let deleted = 0;
    for (let i = 0; i < keys.length; i += 500) deleted += await this.redis.unlink(...keys.slice(i, i + 500));
    return deleted;
  }

  /**
   * The store's epoch and, per row with outbox entries (the store's dirty rows), the days of those entries, with the
   * days an erasure of a row deleted from its outbox (the erased rows' days, kept while their entries live): what a
   * flush that read an outbox may write to DynamoDB. For deleteStore, after the store's tombstone is set: no script
   * of the store seals, folds or acks then, so the epoch stays and the outboxes only lose what this does not see
   * (nothing), until deleteStoreKeys. Reads in steps (not one atomic read).
   */
  async unwritten(store: string): Promise<StoreUnwritten> {
    const k = this.buckets.keys;
    const epoch = await this.redis.get(k.epoch(store));
    const pks = await this.redis.zrange(k.dirty(store), 0, -1);
    const outboxDays = new Map<string, string[]>();
    for (let i = 0; i < pks.length; i += 500) {
      const some = pks.slice(i, i + 500);
      // One slot (the store's hash tag): a pipeline is valid on a cluster too.
      const pipe = this.redis.pipeline();
      for (const pk of some) pipe.hkeys(k.outbox(store, pk));
      const replies = (await pipe.exec()) ?? [];
      some.forEach((pk, j) => {
        const [err, fields] = replies[j] ?? [new Error('no reply')];
        if (err) throw err;
        const days = new Set((fields as string[]).map((f) => f.split('|')[1] ?? '').filter((d) => d !== ''));
        if (days.size > 0) outboxDays.set(pk, [...days]);
      });
    }
    for (const [pk, list] of Object.entries(await this.redis.hgetall(k.erasedDays(store)))) {
      const days = new Set([...(outboxDays.get(pk) ?? []), ...list.split(',').filter((d) => d !== '')]);
      if (days.size > 0) outboxDays.set(pk, [...days]);
    }
    return { epoch: epoch === null || epoch === '' ? undefined : Number(epoch), outboxDays };
  }

  /**
   * Erases one row (see ERASE_ROW), then takes it out of the top lists' rankings (unrankRow), and keeps new counts,
   * rankings and sketch members of it out until `until` (ms) plus the
   * dedupe window's slack, the erased rows kept `ttlSeconds` (the dedupe window) plus that slack (libs/key-layout dedupe-window.ts):
   * a batch accepted before the erasure and let through by the aggregator's window check finds the entry. `now` (ms,
   * default the clock) prunes the erased rows whose time has passed, and dates the rankings. Call it again after the
   * row's DynamoDB items are deleted: a query that read them in between may have cached them. A call cut short between
   * ERASE_ROW and UNRANK leaves the row ranked: the next call takes it out, and counts those rankings (`rankings`);
   * the days of the outbox it erased are returned by every call while the row's entry lives (`outboxDays`).
   */
  async eraseRow(store: string, pk: string, opts: { until: number; ttlSeconds: number; now?: number }): Promise<RowErasure> {
    const k = this.buckets.keys;
    const slackMs = (keptForWindow(opts.ttlSeconds) - opts.ttlSeconds) * 1000;
    const keys = {
      erased: k.erased(store),
      outbox: k.outbox(store, pk),
      cache: k.cache(store, pk),
      cacheVersion: k.cacheVersion(store, pk),
      counts: k.counts(store),
      dirty: k.dirty(store),
      due: k.due(store),
      sealed: k.sealed(store),
      epoch: k.epoch(store),
      dueLater: k.dueLater(store),
      sketchRows: this.buckets.sketches.rowsKey(store, pk),
      erasedDays: k.erasedDays(store),
    };
    let layout = { epoch: (await this.redis.get(keys.epoch)) ?? '', sealed: await this.redis.lrange(keys.sealed, 0, -1) };
    for (let attempt = 0; attempt < 10; attempt++) {
      const seqs = layout.epoch === '' ? layout.sealed : [...layout.sealed, layout.epoch];
      // The row's unwritten sketch fields (SKETCH_ADD notes each in `ur` with its keys); the script checks they are still these.
      const fields = await this.redis.smembers(keys.sketchRows);
      const r = await runScript(
        this.redis,
        ERASE_ROW,
        keys,
        {
          pk,
          untilMs: Math.ceil(opts.until) + slackMs,
          ttlSeconds: keptForWindow(opts.ttlSeconds),
          cacheVersionTtlSeconds: CACHE_VERSION_TTL_SECONDS,
          sealedCount: layout.sealed.length,
          now: Math.floor(opts.now ?? Date.now()),
          sketchCount: fields.length,
        },
        {
          keys: [
            ...seqs.flatMap((seq) => [k.bucket(store, seq, pk), k.bucketRows(store, seq)]),
            ...fields.flatMap((field) => this.buckets.sketches.sketchKeys(store, pk, field)),
          ],
          args: [...layout.sealed, layout.epoch, ...fields],
        },
      );
      if (r[0] === 1) {
        // No apply ranks the row from now on (the erased rows' entry): take it out of the rankings applies made before.
        const rankings = await this.unrankRow(store, pk, { windowSeconds: opts.ttlSeconds, now: opts.now });
        const [, outboxEntries, bucketEntries, cached, sketches, epoch, unfinished, ...outboxDays] = r;
        return {
          outboxEntries: Number(outboxEntries),
          bucketEntries: Number(bucketEntries),
          cachedHistory: Number(cached) === 1,
          sketches: Number(sketches),
          rankings,
          epoch: epoch === '' ? undefined : Number(epoch),
          outboxDays,
          unfinished: Number(unfinished) === 1,
        };
      }
      const [, epoch, ...sealed] = r;
      layout = { epoch, sealed };
    }
    throw new Error(`store ${store}: the bucket layout or the row's sketches moved 10 times during one erasure`);
  }

  /**
   * Forgets the erased days (`erasedDays`) of rows whose erasure finished (the items of those days are tombstones now),
   * and with them the mark that the erasure is unfinished (the row's field itself): from then on ERASE_ROW returns only
   * the days of the outbox it deletes itself, and `unfinished` false, so a field left in `erasedDays` is that of an
   * erasure cut short (libs/tenants eraseVisitor takes such a row for found, and finishes it). Idempotent.
   */
  async forgetErasedDays(store: string, pks: readonly string[]): Promise<void> {
    if (pks.length > 0) await this.redis.hdel(this.buckets.keys.erasedDays(store), ...pks);
  }

  /**
   * Takes row `pk`, when the rules rank its entity, out of every daily ranking (top lists) it can be in: APPLY ranks
   * the row's counts as it counts them, and leaves an erased row out only from its erasure on. The rankings are
   * computed, not searched for (no SCAN): each metric the entity ranks (BucketStore.rankingsOf) on each day a ranking
   * may still be kept of at `now` (ms, default the clock): from 2 days ahead (events up to 23 h in the future, in any
   * time zone) back to the day of an event MAX_LATENESS_DAYS late, accepted up to `windowSeconds` (the dedupe window,
   * and its slack: a batch is applied that long after its acceptance at most) before an apply as long ago as the
   * aggregators keep a ranking (the longest TOP_HISTORY_DAYS they recorded, `<p>:top-history`, at least
   * RANK_TTL_DAYS), a day more for time zones. UNRANK_KEYS_PER_CALL keys a call, the calls sent at once. Returns the
   * number of rankings the member was taken out of. Idempotent.
   */
  async unrankRow(store: string, pk: string, opts: { windowSeconds: number; now?: number }): Promise<number> {
    if (!this.buckets.rankingsOf(store, pk, [])) return 0;
    const history = await readTopHistory(this.redis, this.buckets.keys.topHistory);
    const back = Math.max(RANK_TTL_DAYS, ...history.keys()) + Math.ceil(keptForWindow(opts.windowSeconds) / 86_400) + MAX_LATENESS_DAYS + 1;
    const today = Math.floor((opts.now ?? Date.now()) / 86_400_000);
    const days = Array.from({ length: back + 3 }, (_, i) => dayKey(fromEpochDay(today + 2 - i)));
    const { member, keys } = this.buckets.rankingsOf(store, pk, days)!;
    const calls = Array.from({ length: Math.ceil(keys.length / UNRANK_KEYS_PER_CALL) }, (_, c) => ({
      keys: {},
      args: { member },
      tail: { keys: keys.slice(c * UNRANK_KEYS_PER_CALL, (c + 1) * UNRANK_KEYS_PER_CALL) },
    }));
    let unranked = 0;
    for (const reply of await runScripts(this.redis, UNRANK, calls)) {
      if (reply instanceof Error) throw reply;
      unranked += Number(reply);
    }
    return unranked;
  }
}
