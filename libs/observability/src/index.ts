export * from './crash';
export * from './logger';
export * from './metrics';
export * from './ops-server';
export * from './queue-metrics';
export * from './shutdown';
export * from './http-close';
export * from './log-throttle';
