import { generateLoad } from '@tally/loadgen';
import { compileRules, defaultRules, rollup, rollupDistinct, validateEvents } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import { STORES } from '../load';
import { PEER_RULES } from './postgres-peer';

describe('PEER_RULES (equal work for Tally and the PostgreSQL peer)', () => {
  const peer = compileRules(PEER_RULES);
  const full = compileRules(defaultRules);
  const now = Date.parse('2026-06-15T12:00:00Z');
  const zones = new Map(STORES.map((s) => [s.id, s.timeZone]));

  it('count the same (pk, field) cells as the default rules, without their sketches and rankings', () => {
    let batches = 0;
    for (const b of generateLoad({ seed: 7, stores: STORES, now, batchSize: 500, maxEvents: 20_000 })) {
      const opts = { now, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };
      const events = validateEvents(full, b.events, opts).events;
      expect(validateEvents(peer, b.events, opts).events).toEqual(events);
      const tz = zones.get(b.store)!;
      expect(rollup(peer, b.store, tz, events)).toEqual(rollup(full, b.store, tz, events));
      expect(rollupDistinct(peer, b.store, tz, events).size).toBe(0);
      expect(rollupDistinct(full, b.store, tz, events).size).toBeGreaterThan(0);
      batches++;
    }
    expect(batches).toBeGreaterThan(10);
    expect(Object.values(full.rules.entities).some((e) => e.rank)).toBe(true);
    expect(Object.values(peer.rules.entities).some((e) => e.rank)).toBe(false);
  });
});
