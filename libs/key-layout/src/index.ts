export * from './calendar';
export * from './time-zone';
export * from './names';
export * from './redis-keys';
export { KeyLayoutError } from './errors';
export * from './key-encoding';
export * from './retention';
