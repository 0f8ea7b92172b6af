import { expect } from 'vitest';
import { runChaos, type ChaosResult } from './chaos';
import type { ChaosSettings } from './chaos-config';

/**
 * Runs chaos with `settings` (printing its progress and, afterwards, its summary and first problems) and asserts
 * what every chaos test asserts: every accepted event counted exactly once, in each DynamoDB cell and query answer,
 * UniqueVisitors as in a run without faults, with no failed job, unexpected exit or leaked process. Returns the result for the test's own checks.
 */
export async function runChaosExpectingExact(settings: ChaosSettings): Promise<ChaosResult> {
  const r = await runChaos(settings, (line) => console.log(line));
  console.log(r.summary);
  for (const s of r.table.samples) console.log(`  table: ${s}`);
  for (const s of [...r.liveQuery.mismatches, ...r.query.mismatches, ...r.uniqueVisitors.mismatches].slice(0, 20))
    console.log(`  query: ${s}`);
  for (const s of [...r.failedJobs, ...r.unexpectedExits, ...r.keyLeaks, ...r.leakedPids, ...r.stats.edgeMismatches].slice(0, 30))
    console.log(`  problem: ${s}`);

  expect(r.stats.edgeMismatches).toEqual([]);
  expect(r.stats.gaveUp).toBe(0);
  expect(r.stats.accepted).toBeGreaterThan(settings.events * 0.9);
  expect(r.table.samples).toEqual([]);
  expect(r.liveQuery.mismatches).toEqual([]);
  expect(r.query.mismatches).toEqual([]);
  expect(r.uniqueVisitors.mismatches).toEqual([]);
  expect(r.mismatches).toBe(0);
  expect(r.table.cells).toBeGreaterThan(1_000);
  expect(r.failedJobs).toEqual([]);
  expect(r.unexpectedExits).toEqual([]);
  expect(r.leakedPids).toEqual([]);
  return r;
}
