export * from './problem';
export * from './auth';
export * from './edge.plugin';
export * from './app';
export * from './http-metrics';
export * from './rate-limit';
