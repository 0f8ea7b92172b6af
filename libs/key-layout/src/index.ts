export * from './calendar';
export * from './time-zone';
export * from './names';
export * from './redis-keys';
export { KeyLayoutError, TallyError } from './errors';
export * from './key-encoding';
export * from './retention';
export * from './dedupe-window';
