import { describe, expect, it } from 'vitest';
import { chaosSettings } from './chaos-config';
import { runChaos } from './chaos';

const settings = chaosSettings();
// Load phase, then up to a few minutes of healing, draining and checking.
const timeoutMs = (settings.loadSeconds + 600) * 1_000;

describe(`chaos (${settings.mode}: ${settings.events} events over ${settings.loadSeconds} s, seed ${settings.seed})`, () => {
  it(
    'counts every accepted event exactly once through SIGKILLs, Redis restarts, DynamoDB outages and faults',
    async () => {
      const r = await runChaos(settings, (line) => console.log(line));
      console.log(r.summary);
      for (const s of r.table.samples) console.log(`  table: ${s}`);
      for (const s of [...r.liveQuery.mismatches, ...r.query.mismatches, ...r.uniqueVisitors.mismatches].slice(0, 20)) console.log(`  query: ${s}`);
      for (const s of [...r.failedJobs, ...r.unexpectedExits, ...r.keyLeaks, ...r.leakedPids, ...r.stats.edgeMismatches].slice(0, 30)) console.log(`  problem: ${s}`);

      expect(r.stats.edgeMismatches).toEqual([]);
      expect(r.stats.gaveUp).toBe(0);
      expect(r.stats.accepted).toBeGreaterThan(settings.events * 0.9);
      expect(r.stats.rejected).toBeGreaterThan(0);
      expect(r.faults['sigkill']).toBeGreaterThanOrEqual(10);
      expect(r.faults['redis-restart']).toBeGreaterThanOrEqual(1);
      expect(r.faults['dynamo-outage']).toBeGreaterThanOrEqual(1);
      for (const kind of ['throttle', '500', 'slow', 'drop']) expect([kind, r.faults[kind]! > 0]).toEqual([kind, true]);
      expect(r.table.samples).toEqual([]);
      expect(r.liveQuery.mismatches).toEqual([]);
      expect(r.query.mismatches).toEqual([]);
      // UniqueVisitors: the same answers as a run without faults (exact at small counts, the same HLL above).
      expect(r.uniqueVisitors.mismatches).toEqual([]);
      expect(r.uniqueVisitors.compared).toBeGreaterThan(10);
      expect(r.mismatches).toBe(0);
      expect(r.table.cells).toBeGreaterThan(1_000);
      expect(r.failedJobs).toEqual([]);
      expect(r.unexpectedExits).toEqual([]);
      expect(r.keyLeaks).toEqual([]);
      expect(r.leakedPids).toEqual([]);
    },
    timeoutMs,
  );
});
