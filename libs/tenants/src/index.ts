export { RetentionChangeLimitedError, TenantError, TenantsUnavailableError } from './errors';
export { SCOPES, hashKey, keyIdOf, type Scope } from './keys';
export {
  changeTenant,
  checkCurrency,
  checkLabel,
  checkScopes,
  checkSettings,
  checkStore,
  checkTimeZone,
  createTenant,
  createTenantAdmin,
  getTenant,
  historyMonthsSetAt,
  issueKey,
  listKeys,
  listTenants,
  listTenantsPage,
  MAX_HISTORY_MONTHS,
  revokeKey,
  setIngestBudget,
  setTimeZone,
  setCurrency,
  updateTenant,
  type KeyInfo,
  type TenantSettings,
  type TenantAdmin,
  type TenantDb,
  type TenantInfo,
} from './admin';
export { createTenantDirectory, UnknownKeyLookupsThrottledError, type Principal, type TenantDirectory } from './directory';
export { deleteStore, eraseVisitor, type ErasureDeps } from './erasure';
export { visitorExpiry } from './retention';
export {
  restampRetention,
  RETENTION_CHANGE_INTERVAL_MS,
  RETENTION_SETTLE_MS,
  type RestampOptions,
  type RetentionRestamp,
} from './retention-change';
