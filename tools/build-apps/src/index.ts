export { buildBundles, copyExternals, describeBundles, TARGETS, type BuildOptions, type BuiltBundle, type BundleTarget } from './build';
