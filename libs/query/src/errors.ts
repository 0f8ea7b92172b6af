import { TallyError } from '@tally/key-layout';

/** A query that cannot be answered as asked; `field` names the request field at fault (400). */
export class QueryError extends TallyError {
  readonly code = 'TALLY_ERR_QUERY';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The store's bucket layout (its open and sealed buckets) moved between every try of one Redis snapshot, and
 * BucketStore.snapshot gave up: nothing is wrong with the query, and the same read a moment later succeeds. The
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
