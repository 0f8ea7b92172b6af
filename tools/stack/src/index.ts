export { backendEnvOrExit, runningStack, stackBackend } from './run-file';
export { alignColumns, runCli, UsageError, type CliIo, type CliValues } from './cli';
