import { defineProject, mergeConfig } from 'vitest/config';
import { shared } from '../../vitest.shared.ts';

// Unit tests of the pure modules (formatting, periods, series, API client, polling) run in Node; the browser is
// exercised for real by dashboard.e2e.test.ts (Chromium driven by playwright-core against the whole stack).
export default mergeConfig(shared, defineProject({ test: { name: 'dashboard' } }));
