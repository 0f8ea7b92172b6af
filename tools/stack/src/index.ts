export { backendEnvOrExit, redisNote, runningStack, stackBackend, stackLayout } from './run-file';
export { connectToolRedis } from './tool-redis';
export { alignColumns, oneLine, runCli, STDIO, UsageError, type CliIo, type CliValues } from './cli';
