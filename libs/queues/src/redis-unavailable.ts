/**
 * Error replies of a Redis server that cannot serve the command now, whatever the command: loading its AOF or RDB
 * (LOADING), running a long script (BUSY), a replica or a demoted master (READONLY, MASTERDOWN), a Cluster without
 * all its slots or in the middle of a resharding or failover (CLUSTERDOWN, TRYAGAIN), too few replicas for
 * min-replicas-to-write (NOREPLICAS), snapshots failing (MISCONF), or at maxmemory under noeviction (OOM).
 */
const NOT_NOW_REPLY = /^(LOADING|BUSY|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|MISCONF|OOM)\b/;

/**
 * ioredis' own errors for a command no server answered: connection closed or not writable, cluster not ready, timeouts,
 * redirections given up (`Too many Cluster redirections`: a slot left mid-migration, its TRYAGAIN, ASK and MOVED).
 */
const NO_ANSWER =
  /^(Connection is closed|Stream isn't writeable|Cluster isn't ready|Cluster is disconnect|None of startup nodes is available|Failed to refresh slots cache|Too many Cluster redirections|Node is disconnected|Command timed out|Command aborted due to connection close|Socket timeout|Connection is aborted|Connection is discarded|Ready check failed|connect ETIMEDOUT)/;

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * True for an ioredis error that means Redis (a store's master, the queue's) is not available now: no connection, no answer in
 * time, or a server state refusing every command (NOT_NOW_REPLY). False for a refusal of the command itself (ERR,
 * WRONGTYPE, a script's own error) and for any other error (a TypeError is a bug, not an outage).
 */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === 'MaxRetriesPerRequestError' || err.name === 'ClusterAllFailedError') return true;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
  if (err.name === 'ReplyError') return NOT_NOW_REPLY.test(err.message);
  // A reply error rethrown as a plain Error (a script's pcall, BullMQ) keeps its message.
  return (
    (err.name === 'Error' || err.name === 'RedisError' || err.name === 'AbortError') &&
    (NO_ANSWER.test(err.message) || NOT_NOW_REPLY.test(err.message))
  );
}
