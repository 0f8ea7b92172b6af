export * from './checks';
export { composeConfig, serviceEnv } from './compose';
export { parseDockerfile, resolveStage } from './dockerfile';
export { metricNamesIn, tallyNamesInCode } from './metrics';
