export * from './dlq';
export { DlqError, type DlqErrorCode } from './errors';
export { runDlqCli, USAGE, type DlqCliDeps, type Progress } from './cli';
