export { backendEnvOrExit, runningStack, stackBackend, stackLayout } from './run-file';
export { alignColumns, runCli, UsageError, type CliIo, type CliValues } from './cli';
