import { defineConfig } from 'tsdown';

// The published package: ESM and CommonJS entry points with bundled type declarations. The workspace libs it is
// made of (@tally/intake, queues, schema, key-layout) are bundled in, so the validation stays one implementation;
// the npm packages they use stay external and are the package's dependencies.
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  platform: 'node',
  target: 'node22',
  sourcemap: true,
  clean: true,
  // The lib's tsconfig.json is a project reference of the workspace (its libs are references): build mode.
  dts: { tsc: { eager: true, build: true } },
  deps: { alwaysBundle: [/^@tally\//] },
});
