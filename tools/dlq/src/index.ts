export * from './dlq';
export { runDlqCli, USAGE, type DlqCliDeps, type Progress } from './cli';
