export { BucketStore, type BucketStoreOptions, type Entry, type OutboxRead, type RowSnapshot } from './bucket-store';
export { BucketsError, type BucketsErrorCode } from './errors';
