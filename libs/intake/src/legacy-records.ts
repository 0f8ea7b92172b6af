import type { Redis } from 'ioredis';

/** How long what the marker said is used before it is read again (in the background). */
const REFRESH_MS = 60_000;

export interface LegacyRecords {
  /**
   * Whether a keyed call must also bind and look for its record where earlier versions kept it: what the marker said
   * (its last answer, read again in the background once a minute old), or, before it has answered, a read of it sent
   * now (the caller sends its own commands with it), which rejects when Redis does not answer: nothing is kept then,
   * and the next call reads again. `lifetimeSeconds` is a record's (two dedupe windows and the slack).
   */
  open(lifetimeSeconds: number): boolean | Promise<boolean>;
  /** What the marker said last, without reading: undefined before it has answered (for an error path). */
  last(): boolean | undefined;
}

/**
 * The upgrade window of idempotency records: versions before their move to the store's slot kept every record on the
 * first `events` shard, and look for it only there. A persistent marker at `key` (on that shard) holds the time until
 * which a record may be there: the first process of this version sets it (SET NX) to two record lifetimes from then,
 * one for the rolling deploy to replace every earlier collector and client, one for the last record they wrote to
 * expire; every process reads it (the same SET NX GET) with its first keyed call's commands, until it has answered,
 * then at most once a minute. While it lies ahead, a keyed call binds and looks for its record there too, so either
 * version finds the other's.
 * A marker that cannot be read is never taken for a window over. One that is deleted (to upgrade again after a
 * rollback) is set again by the next read: a new window. A value that is not a time keeps the window open.
 */
export function legacyRecords(redis: Pick<Redis, 'set'>, key: string): LegacyRecords {
  /** The marker's time (epoch ms), undefined until it has answered. */
  let until: number | undefined;
  let readAt = -Infinity;
  let reading: Promise<number> | undefined;
  const read = (lifetimeSeconds: number) =>
    (reading ??= (async () => {
      try {
        const proposed = Date.now() + 2 * lifetimeSeconds * 1_000;
        const then = await redis.set(key, String(proposed), 'NX', 'GET');
        const at = then === null ? proposed : Number(then);
        until = Number.isFinite(at) ? at : Infinity;
        readAt = performance.now();
        return until;
      } finally {
        reading = undefined;
      }
    })());
  const last = () => (until === undefined ? undefined : Date.now() < until);
  return {
    open: (lifetimeSeconds) => {
      if (until === undefined) return read(lifetimeSeconds).then((at) => Date.now() < at);
      if (performance.now() - readAt >= REFRESH_MS) {
        // Not waited for; a read Redis did not answer is tried again a minute on (what it said last serves meanwhile).
        readAt = performance.now();
        read(lifetimeSeconds).catch(() => undefined);
      }
      return last()!;
    },
    last,
  };
}
