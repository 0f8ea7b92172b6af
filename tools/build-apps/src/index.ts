export { buildBundles, TARGETS } from './build';
