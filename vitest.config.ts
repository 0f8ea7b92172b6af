import { defineConfig } from 'vitest/config';

// `npm test` runs every project's tests in one vitest process pool.
export default defineConfig({
  test: {
    projects: ['apps/*/vitest.config.ts', 'libs/*/vitest.config.ts', 'tools/*/vitest.config.ts'],
    maxWorkers: 2,
  },
});
