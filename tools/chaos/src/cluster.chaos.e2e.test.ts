import { describe, expect, it } from 'vitest';
import { chaosSettings } from './chaos-config';
import { runChaosExpectingExact } from './chaos';

// The chaos run on a local 3-master Redis Cluster with the queues in 3 shards: SIGKILLed apps, masters SIGKILLed
// and restarted on their AOF, DynamoDB faults; every DynamoDB cell and query answer exact. Short in npm test; long
// (the chaos run's long settings) in npm run test:chaos.
const base = chaosSettings();
const settings =
  base.mode === 'long'
    ? { ...base, redisMasters: 3, queueShards: 3 }
    : {
        ...chaosSettings({ TALLY_CHAOS_SECONDS: '40', TALLY_CHAOS_EVENTS: '12000', TALLY_CHAOS_SEED: '14' }),
        redisMasters: 3,
        queueShards: 3,
        killsPerApp: 1,
      };

describe(`chaos on a Redis Cluster (${settings.events} events over ${settings.loadSeconds} s, 3 masters, 3 queue shards)`, () => {
  it(
    'counts every accepted event exactly once through app and master SIGKILLs',
    async () => {
      const r = await runChaosExpectingExact(settings);
      expect(r.faults['redis-restart']).toBeGreaterThanOrEqual(2);
      expect(r.faults['sigkill']).toBeGreaterThanOrEqual(8);
    },
    (settings.loadSeconds + 600) * 1_000,
  );
});
