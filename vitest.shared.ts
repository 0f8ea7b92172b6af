import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/** Settings every project's vitest config shares. Real services make tests slower than unit tests. */
export const shared = defineConfig({
  // @tally/client's exports point at its build (dist/, for npm); tests use its sources, as tsconfig.base.json does.
  resolve: { alias: { '@tally/client': fileURLToPath(new URL('./libs/client/src/index.ts', import.meta.url)) } },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
