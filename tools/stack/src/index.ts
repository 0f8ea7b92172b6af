export { backendEnvOrExit, redisNote, runningStack, stackBackend, stackLayout } from './run-file';
export { connectToolRedis } from './tool-redis';
export { alignColumns, runCli, UsageError, type CliIo, type CliValues } from './cli';
