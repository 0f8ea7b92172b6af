export { ConfigError } from './errors';
export { loadConfig, loadConfigOrExit, rawEnv } from './load';
export * from './env.schema';
export { clusterNodes } from './host-list';
