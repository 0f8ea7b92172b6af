import { TallyError } from '@tally/key-layout';

/** Stable codes of the errors this lib throws. */
export type TenantErrorCode =
  | 'TALLY_ERR_TENANT_EXISTS'
  /** The store id is not free yet: the store of that id is being deleted, or was deleted less than its tombstone's life ago. */
  | 'TALLY_ERR_STORE_ID_RESERVED'
  | 'TALLY_ERR_TENANT_NOT_FOUND'
  | 'TALLY_ERR_KEY_NOT_FOUND'
  | 'TALLY_ERR_INVALID_STORE'
  | 'TALLY_ERR_INVALID_TIME_ZONE'
  | 'TALLY_ERR_INVALID_CURRENCY'
  | 'TALLY_ERR_INVALID_SCOPES'
  | 'TALLY_ERR_INVALID_LABEL'
  | 'TALLY_ERR_INVALID_BUDGET'
  | 'TALLY_ERR_INVALID_RETENTION'
  | 'TALLY_ERR_INVALID_LIMIT'
  | 'TALLY_ERR_VISITOR_NOT_FOUND'
  /** A visitor erasure under rollup rules that key no entity by the visitor alone: nothing of a visitor is erasable. */
  | 'TALLY_ERR_NOT_ERASABLE'
  /** A change of historyMonths came sooner after the last one than its caller allows (RetentionChangeLimitedError). */
  | 'TALLY_ERR_RETENTION_CHANGE_LIMITED'
  | 'TALLY_ERR_DELETION_INCOMPLETE';

/** An admin operation on tenants or keys was refused; `message` says what and which store/key. */
export class TenantError extends TallyError<TenantErrorCode> {
  constructor(
    readonly code: TenantErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A change of a store's historyMonths was refused, nothing written, because the last change (`lastChangedAt`, epoch
 * ms) was less than `everyMs` ago (changeTenant `historyChangeEveryMs`: each change makes the dynamo-writer restamp
 * the store's visitor items, a Scan of the whole table). `waitMs`: how long until it may change again.
 */
export class RetentionChangeLimitedError extends TenantError {
  constructor(
    readonly store: string,
    readonly lastChangedAt: number,
    readonly everyMs: number,
    readonly waitMs: number,
  ) {
    const every = everyMs % 3_600_000 === 0 ? `${everyMs / 3_600_000} h` : `${Math.ceil(everyMs / 1000)} s`;
    super(
      'TALLY_ERR_RETENTION_CHANGE_LIMITED',
      `the visitor-history retention (historyMonths) of store ${store} was changed at ${new Date(lastChangedAt).toISOString()}; ` +
        `a store's admin key may change it at most once every ${every} (each change makes Tally restamp the store's visitor items, ` +
        `a scan of the whole table): change it again from ${new Date(lastChangedAt + everyMs).toISOString()}, or ask the operator`,
    );
  }
}

/**
 * DynamoDB did not answer a key or tenant lookup and nothing was known about that key or store from before.
 * Callers answer 503 with Retry-After: known keys keep working from the cache while DynamoDB is down.
 */
export class TenantsUnavailableError extends TallyError {
  readonly code = 'TALLY_ERR_TENANTS_UNAVAILABLE';
}
