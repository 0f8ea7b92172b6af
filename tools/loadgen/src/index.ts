export * from './rng';
export * from './generator';
export * from './expected';
export * from './senders';
export * from './driver';
export * from './fleet';
export * from './verify';
export * from './cli';
