import { describe, expect, it } from 'vitest';
import { chaosSettings } from './chaos-config';
import { runChaos } from './chaos';

// The chaos run on a local 3-master Redis Cluster with the queues in 3 shards: SIGKILLed apps, masters SIGKILLed
// and restarted on their AOF, DynamoDB faults; every DynamoDB cell and query answer exact. Short in npm test; long
// (the chaos run's long settings) in npm run test:chaos.
const base = chaosSettings();
const settings =
  base.mode === 'long'
    ? { ...base, redisMasters: 3, queueShards: 3 }
    : { ...chaosSettings({ TALLY_CHAOS_SECONDS: '40', TALLY_CHAOS_EVENTS: '12000', TALLY_CHAOS_SEED: '14' }), redisMasters: 3, queueShards: 3, killsPerApp: 1 };

describe(`chaos on a Redis Cluster (${settings.events} events over ${settings.loadSeconds} s, 3 masters, 3 queue shards)`, () => {
  it(
    'counts every accepted event exactly once through app and master SIGKILLs',
    async () => {
      const r = await runChaos(settings, (line) => console.log(line));
      console.log(r.summary);
      for (const s of r.table.samples) console.log(`  table: ${s}`);
      for (const s of [...r.liveQuery.mismatches, ...r.query.mismatches].slice(0, 20)) console.log(`  query: ${s}`);
      for (const s of [...r.failedJobs, ...r.unexpectedExits, ...r.leakedPids, ...r.stats.edgeMismatches].slice(0, 30)) console.log(`  problem: ${s}`);

      expect(r.stats.edgeMismatches).toEqual([]);
      expect(r.stats.gaveUp).toBe(0);
      expect(r.stats.accepted).toBeGreaterThan(settings.events * 0.9);
      expect(r.faults['redis-restart']).toBeGreaterThanOrEqual(2);
      expect(r.faults['sigkill']).toBeGreaterThanOrEqual(8);
      expect(r.table.samples).toEqual([]);
      expect(r.liveQuery.mismatches).toEqual([]);
      expect(r.query.mismatches).toEqual([]);
      expect(r.mismatches).toBe(0);
      expect(r.table.cells).toBeGreaterThan(1_000);
      expect(r.failedJobs).toEqual([]);
      expect(r.unexpectedExits).toEqual([]);
      expect(r.leakedPids).toEqual([]);
    },
    (settings.loadSeconds + 600) * 1_000,
  );
});
