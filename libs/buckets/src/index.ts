export {
  BucketStore,
  RANK_TTL_DAYS,
  TOP_MAX_MEMBERS,
  type Backlog,
  type BucketStoreOptions,
  type DueRow,
  type Entry,
  type MoveHold,
  type OutboxRead,
  type RowSnapshot,
  type StoreBacklog,
} from './bucket-store';
export { BucketsError, SnapshotContendedError, TopTooLargeError, type BucketsErrorCode } from './errors';
export { SketchStore, EXACT_THRESHOLD, type LiveSketch } from './sketch-store';
export { BucketEraser, ERASE_ROW, type RowErasure } from './erasure';
export { readTopHistory, recordTopHistory, type TopHistory } from './top-history';
