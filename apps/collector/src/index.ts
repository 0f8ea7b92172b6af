export { buildApp, type CollectorApp, type CollectorDeps } from './app';
export { closeCollectorDeps, createCollectorDeps, type CollectorResources } from './deps';
