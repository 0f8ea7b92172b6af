export { backendEnvOrExit, runningStack } from './run-file';
export { alignColumns, runCli, UsageError, type CliIo, type CliValues } from './cli';
