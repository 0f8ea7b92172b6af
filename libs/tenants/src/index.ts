export { TenantError, TenantsUnavailableError, type TenantErrorCode } from './errors';
export { SCOPES, hashKey, keyIdOf, type Scope } from './keys';
export {
  createTenant,
  createTenantAdmin,
  DEFAULT_TIME_ZONE,
  getTenant,
  issueKey,
  listKeys,
  revokeKey,
  setIngestBudget,
  setTimeZone,
  type KeyInfo,
  type TenantAdmin,
  type TenantDb,
  type TenantInfo,
} from './admin';
export {
  createTenantDirectory,
  type DirectoryLog,
  type Principal,
  type TenantDirectory,
  type TenantDirectoryOptions,
} from './directory';
