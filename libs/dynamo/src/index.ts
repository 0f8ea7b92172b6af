export * from './client';
export * from './errors';
export * from './table';
export * from './meter';
export * from './cells';
export * from './row-writer';
export * from './row-reader';
export * from './sketches';
