import type { Cluster, Redis } from 'ioredis';
import { RANK_TTL_DAYS } from './bucket-store';
import { defineScript, runScript } from './script-table';

/**
 * How long the aggregators have kept the daily rankings (top lists), as a query needs it: per number of days d, the
 * time (ms) since which every aggregator kept them at least d days. A day whose applies all came after that time,
 * and which is less than d days old, has its ranking whole; an older day's may have expired under a shorter
 * retention and been re-created by a late event, or be gone. With no record (no aggregator recorded one yet), every
 * aggregator kept them RANK_TTL_DAYS days, as before TOP_HISTORY_DAYS could change it.
 */
export type TopHistory = ReadonlyMap<number, number>;

/**
 * RECORD_TOP_HISTORY: an aggregator keeping the rankings `days` days says so at `now` (at start-up, then every few
 * minutes while it runs). KEYS: history (libs/key-layout `topHistory`, a hash days -> since ms). ARGV: days, now,
 * defaultDays (RANK_TTL_DAYS). A missing hash starts as {defaultDays: 0} (every ranking so far was kept that long);
 * every entry of more days than `days` is moved to `now` (this aggregator keeps them less long from now on); an entry
 * for `days` itself, when missing, takes the earliest time of the entries of more days (they kept them longer) or
 * `now`. Returns the number of entries written.
 */
const RECORD_TOP_HISTORY = defineScript<number>()({
  name: 'RECORD_TOP_HISTORY',
  shebang: '#!lua',
  keys: ['history'],
  args: ['days', 'now', 'defaultDays'],
  body: `
if not (string.match(A.days, '^[1-9]%d*$') and string.match(A.now, '^%d+$') and string.match(A.defaultDays, '^[1-9]%d*$')) then
  return redis.error_reply('TALLY_ERR_ARGUMENT days, now and defaultDays must be integers')
end
local written = 0
if redis.call('EXISTS', K.history) == 0 then
  redis.call('HSET', K.history, A.defaultDays, '0')
  written = 1
end
local days, now = tonumber(A.days), tonumber(A.now)
local flat = redis.call('HGETALL', K.history)
local own, longer = nil, nil
for i = 1, #flat, 2 do
  local d, since = tonumber(flat[i]), tonumber(flat[i + 1])
  if d == days then own = since
  elseif d > days then
    if not longer or since < longer then longer = since end
    if since < now then
      redis.call('HSET', K.history, flat[i], A.now)
      written = written + 1
    end
  end
end
if not own then
  redis.call('HSET', K.history, A.days, string.format('%d', longer or now))
  written = written + 1
end
return written
`,
});

/** Records that this aggregator keeps the daily rankings `days` days, as of `now` (RECORD_TOP_HISTORY). */
export async function recordTopHistory(redis: Redis | Cluster, key: string, days: number, now: number): Promise<number> {
  return runScript(redis, RECORD_TOP_HISTORY, { history: key }, { days, now: Math.floor(now), defaultDays: RANK_TTL_DAYS });
}

/** The aggregators' record of how long they kept the daily rankings (TopHistory), RANK_TTL_DAYS since ever when none. */
export async function readTopHistory(redis: Redis | Cluster, key: string): Promise<TopHistory> {
  const flat = await redis.hgetall(key);
  const entries = Object.entries(flat).map(([d, since]) => [Number(d), Number(since)] as const);
  return new Map(entries.length > 0 ? entries : [[RANK_TTL_DAYS, 0]]);
}
