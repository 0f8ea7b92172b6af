import { writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { defineConfig } from 'tsdown';

/** The repository's root, which the source map's sources are named from. */
const REPO = resolve(import.meta.dirname, '../..');

// The published package: one CommonJS build with bundled type declarations, and an ES module entry point that
// re-exports it, so `import` and `require` get the same classes (no dual-package hazard: an error thrown by a
// client made through one is `instanceof` the class taken through the other). The workspace libs it is made of
// (@tally/intake, queues, schema, key-layout, config, observability's error-key) are bundled in, so the validation
// stays one implementation; the npm packages they use stay external and are the package's dependencies.
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['cjs'],
  platform: 'node',
  target: 'node22',
  sourcemap: true,
  outputOptions: {
    // The map holds the sources' text (sourcesContent); their paths, relative to dist/ (`../../intake/src/intake.ts`),
    // would name files of this repository that an install does not have (node --enable-source-maps would show
    // node_modules/@tally/intake/src/intake.ts in stack traces). A URL of its own scheme names each by its path in the
    // repository instead, a file of no disk: `tally-client:///libs/intake/src/intake.ts`.
    sourcemapPathTransform: (source, map) => `tally-client:///${relative(REPO, resolve(dirname(map), source)).replaceAll('\\', '/')}`,
  },
  clean: true,
  // The lib's tsconfig.json is a project reference of the workspace (its libs are references): build mode.
  dts: { tsc: { eager: true, build: true } },
  deps: { alwaysBundle: [/^@tally\//] },
  hooks: {
    'build:done': ({ options }) => {
      for (const file of ['index.mjs', 'index.d.mts']) writeFileSync(join(options.outDir, file), "export * from './index.cjs';\n");
    },
  },
});
