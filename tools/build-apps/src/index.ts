export { buildBundles, TARGETS, type BuiltBundle, type BundleTarget } from './build';
