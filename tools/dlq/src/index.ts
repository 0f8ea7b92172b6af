export * from './dlq';
export { DlqError, type DlqErrorCode } from './errors';
export { runDlqCli, USAGE, type CliIo, type DlqCliDeps, type Progress } from './cli';
