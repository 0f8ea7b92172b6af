export * from './checks';
export { interpolate, parseCompose, serviceEnv } from './compose';
export { parseDockerfile, resolveStage } from './dockerfile';
export { metricNamesIn, tallyNamesInCode } from './metrics';
