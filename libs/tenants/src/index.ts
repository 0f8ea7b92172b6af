export { TenantError, TenantsUnavailableError, type TenantErrorCode } from './errors';
export { SCOPES, hashKey, keyIdOf, type Scope } from './keys';
export {
  createTenant,
  createTenantAdmin,
  DEFAULT_TIME_ZONE,
  getTenant,
  issueKey,
  listKeys,
  listTenants,
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
export {
  createTenantDirectory,
  type DirectoryLog,
  type DirectoryTenant,
  type Principal,
  type TenantDirectory,
  type TenantDirectoryOptions,
} from './directory';
export { deleteStore, eraseVisitor, type ErasureDeps, type StoreDeletion, type VisitorErasure } from './erasure';
export { visitorExpiry } from './retention';
