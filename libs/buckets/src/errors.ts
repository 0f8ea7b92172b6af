import { TallyError } from '@tally/key-layout';

/**
 * Stable codes of the errors this lib throws; the TALLY_ERR_* ones come from the scripts' error replies, and
 * TALLY_ERR_WRONG_TYPE from a script's WRONGTYPE error (a key of the store holds another type).
 */
export type BucketsErrorCode =
  'TALLY_ERR_SUM_OVERFLOW' | 'TALLY_ERR_NOT_A_COUNT' | 'TALLY_ERR_FOLD_CONFLICT' | 'TALLY_ERR_ARGUMENT' | 'TALLY_ERR_WRONG_TYPE';

/** A script refused its whole call before writing anything; `code` says why. */
export class BucketsError extends TallyError<BucketsErrorCode> {
  constructor(
    readonly code: BucketsErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The store's bucket layout (its open and sealed buckets) moved between every try of one Redis snapshot, and
 * BucketStore.snapshot gave up (STALE_RETRIES): nothing is wrong with the query, and the same read a moment later succeeds. The
 * HTTP edge answers it 503 with Retry-After.
 */
export class SnapshotContendedError extends TallyError {
  readonly code = 'TALLY_ERR_SNAPSHOT_CONTENDED';
  constructor(
    readonly store: string,
    readonly tries: number,
    options?: { cause?: unknown },
  ) {
    super(`store ${store}: its buckets moved during every try of one snapshot (${tries} tries)`, options);
  }
}

/**
 * BucketStore.top refused to rank: the daily ranking zsets of the days asked hold more members in all (`members`,
 * their ZCARDs summed) than one TOP call may union (`maxMembers`). Nothing was written; a shorter range fits.
 */
export class TopTooLargeError extends TallyError {
  readonly code = 'TALLY_ERR_TOP_TOO_LARGE';
  constructor(
    readonly store: string,
    readonly members: number,
    readonly maxMembers: number,
    options?: { cause?: unknown },
  ) {
    super(`store ${store}: the rankings asked hold ${members} members in all, over the ${maxMembers} one top list may union`, options);
  }
}
