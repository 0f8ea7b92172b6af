export { buildApp, type QueryApiApp } from './app';
export type { QueryApiDeps } from './deps';
