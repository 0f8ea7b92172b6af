import { defineConfig } from 'vitest/config';

/** Settings every project's vitest config shares. Real services make tests slower than unit tests. */
export const shared = defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
