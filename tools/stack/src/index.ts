export { backendEnvOrExit, chooseBackends, type BackendChoice } from './backends';
export { StackError } from './errors';
