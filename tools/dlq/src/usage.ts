// The usage text imports nothing, so `dlq --help` loads no more than this (dlq.test.ts checks the queue names
// against QUEUE_NAMES).
export const USAGE = `usage: dlq <command> [arguments]   (npm run dlq -- <command> …)

  list [--queue <q>] [filters] [--limit <n>] [--json]     failed jobs by queue, newest first in
                                                          each: queue, id, age, attempts, reason
                                                          (--limit per queue, default 50)
  show <queue> <id> [--json]                              one job with its payload and stack trace
  replay <queue> <id> [--dry-run] [--past-dedupe-window]  move a failed job back to waiting, same id
  replay <queue> (--all | filters) [--dry-run] [--past-dedupe-window]
                                                          replay every failed job that matches
  purge <queue> <id> (--yes | --dry-run)                  delete a failed job for good
  purge <queue> (--all | filters) (--yes | --dry-run)     delete every failed job that matches

Each command takes only the options shown with it: any other is refused (exit 2), never ignored.
replay and purge take no --limit: they act on every job that matches. Narrow the match with filters
(see it first with --dry-run) or give one id.

filters (ages count from the failure):
  --reason <regex>    failed reason matches anywhere in it (a case-insensitive regex), so
                      'unknown store S1' matches S10 and S123 too: anchor it, '^unknown store S1:'
                      (the aggregator's reason is "unknown store <id>: …"); '(?-i:S1)' makes a part
                      case-sensitive
  --older-than <age>  failed at least this long ago, e.g. 10m, 2h, 7d, 1h30m
  --newer-than <age>  failed at most this long ago

queues: events, seal, dynamo-writes, maintenance.
purge never asks: without --yes it refuses (--dry-run only says what it would delete). Replays of
events batches accepted longer ago than the aggregators' DEDUPE_WINDOW_SECONDS (they publish it in
Redis; this tool's own while none has) are refused (a batch applied before it failed would count
twice) unless --past-dedupe-window, which marks each replayed batch so that the aggregator applies
it (it refuses a batch past its window otherwise).
Configured by REDIS_URL (unset: the running npm start stack's Redis, prefix and shards) or
REDIS_CLUSTER_NODES, or REDIS_SENTINELS with REDIS_SENTINEL_MASTER and REDIS_SENTINEL_PASSWORD;
KEY_PREFIX, QUEUE_SHARDS (every shard of a queue is read and acted on, and the shards past it that
hold jobs, left by a lowered QUEUE_SHARDS: an events job replayed there is run by an aggregator
within 5 minutes; a dynamo-writes job there is redundant, its row is flushed from its own shard, so
replay discards it and says so) and DEDUPE_WINDOW_SECONDS.`;
