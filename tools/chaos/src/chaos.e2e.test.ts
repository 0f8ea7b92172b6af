import { describe, expect, it } from 'vitest';
import { chaosSettings } from './chaos-config';
import { runChaosExpectingExact } from './chaos';

const settings = chaosSettings();
// Load phase, then up to a few minutes of healing, draining and checking.
const timeoutMs = (settings.loadSeconds + 600) * 1_000;

describe(`chaos (${settings.mode}: ${settings.events} events over ${settings.loadSeconds} s, seed ${settings.seed})`, () => {
  it(
    'counts every accepted event exactly once through SIGKILLs, Redis restarts, DynamoDB outages and faults',
    async () => {
      const r = await runChaosExpectingExact(settings);
      expect(r.stats.rejected).toBeGreaterThan(0);
      expect(r.faults['sigkill']).toBeGreaterThanOrEqual(10);
      expect(r.faults['redis-restart']).toBeGreaterThanOrEqual(1);
      expect(r.faults['dynamo-outage']).toBeGreaterThanOrEqual(1);
      for (const kind of ['throttle', '500', 'slow', 'drop']) expect([kind, r.faults[kind]! > 0]).toEqual([kind, true]);
      // UniqueVisitors: the same answers as a run without faults (exact at small counts, the same HLL above).
      expect(r.uniqueVisitors.compared).toBeGreaterThan(10);
      expect(r.keyLeaks).toEqual([]);
    },
    timeoutMs,
  );
});
