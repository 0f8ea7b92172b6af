export { backendEnvOrExit, chooseBackends, type BackendChoice } from './backends';
export { StackError } from './errors';
export { alignColumns, runCli, UsageError, type CliIo, type CliValues } from './cli';
