import { defineConfig } from 'vitest/config';

/** Settings every project's vitest config shares. Real services make tests slower than unit tests. */
export const shared = defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // The AWS SDK's Node-20 support notice, printed once per process, is noise in test output.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    reporters: process.env['CI'] ? ['default'] : ['default'],
  },
});
