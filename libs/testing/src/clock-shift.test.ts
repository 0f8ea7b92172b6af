import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CLOCK_SHIFT_PRELOAD_URL, clockOffsetTo, clockShiftEnv } from './index';

const run = promisify(execFile);
/** This process may itself run shifted (`npm run test:at`): the real clock is its clock minus its own offset. */
const ownOffset = Number(process.env['TALLY_TEST_CLOCK_OFFSET_MS'] ?? 0);
const realNow = () => Date.now() - ownOffset;

const PROBE = `
const { execFileSync } = require('node:child_process');
const grandchild = Number(execFileSync(process.execPath, ['-e', 'process.stdout.write(String(Date.now()))']).toString());
console.log(JSON.stringify({
  now: Date.now(),
  constructed: new Date().getTime(),
  called: Date(),
  grandchild,
  withArgs: new Date(0).getTime(),
  fromString: new Date('2023-05-03T10:15:00Z').getTime(),
  parse: Date.parse('2023-05-03T10:15:00Z'),
  utc: Date.UTC(2023, 4, 3),
  isDate: new Date() instanceof Date && Object.prototype.toString.call(new Date()) === '[object Date]',
  name: Date.name,
}));`;

/** Runs PROBE in a Node child with `env` on top of this process's environment; returns what it saw, and when. */
async function probe(env: Record<string, string>) {
  const before = realNow();
  const { stdout } = await run(process.execPath, ['-e', PROBE], { env: { ...process.env, ...env } });
  return { seen: JSON.parse(stdout), before, after: realNow() };
}

describe('clockOffsetTo', () => {
  const now = Date.UTC(2026, 11, 2, 6, 30, 15, 250);
  it('reads HH:MM and HH:MM:SS as UTC times of the current UTC day', () => {
    expect(now + clockOffsetTo('00:03', now)).toBe(Date.UTC(2026, 11, 2, 0, 3));
    expect(now + clockOffsetTo('23:59', now)).toBe(Date.UTC(2026, 11, 2, 23, 59));
    expect(now + clockOffsetTo('12:00:30', now)).toBe(Date.UTC(2026, 11, 2, 12, 0, 30));
  });
  it('reads an ISO instant with a zone', () => {
    expect(now + clockOffsetTo('2027-03-28T00:58:30Z', now)).toBe(Date.UTC(2027, 2, 28, 0, 58, 30));
    expect(now + clockOffsetTo('2024-02-29T23:59:00-08:00', now)).toBe(Date.UTC(2024, 2, 1, 7, 59));
  });
  it('refuses anything else, saying what it expects', () => {
    for (const bad of ['24:00', '12:60', '7:30', 'noon', '2027-03-28T00:58:30', ''])
      expect(() => clockOffsetTo(bad, now), bad).toThrow(/expected HH:MM|not a time of day/);
  });
});

describe('the clock-shift preload', () => {
  it('shifts Date.now(), new Date() and Date() in a Node child and in the processes it starts', async () => {
    const offset = clockOffsetTo('00:03', realNow());
    const { seen, before, after } = await probe(clockShiftEnv(offset));
    for (const t of [seen.now, seen.constructed, seen.grandchild]) {
      expect(t).toBeGreaterThanOrEqual(before + offset);
      expect(t).toBeLessThanOrEqual(after + offset);
    }
    expect(Date.parse(seen.called)).toBeGreaterThanOrEqual(Math.floor((before + offset) / 1000) * 1000);
    expect(Date.parse(seen.called)).toBeLessThanOrEqual(after + offset);
    // A date built from arguments, Date.parse and Date.UTC are untouched; dates stay dates.
    expect(seen).toMatchObject({
      withArgs: 0,
      fromString: Date.UTC(2023, 4, 3, 10, 15),
      parse: Date.UTC(2023, 4, 3, 10, 15),
      utc: Date.UTC(2023, 4, 3),
      isDate: true,
      name: 'Date',
    });
  });

  it('leaves the clock alone with an offset of 0', async () => {
    const { seen, before, after } = await probe(clockShiftEnv(0));
    expect(seen.now).toBeGreaterThanOrEqual(before);
    expect(seen.now).toBeLessThanOrEqual(after);
    expect(seen.grandchild).toBeLessThanOrEqual(after);
  });

  it('refuses an offset that is not whole milliseconds, naming the variable', async () => {
    const err = await probe({ NODE_OPTIONS: `--import=${CLOCK_SHIFT_PRELOAD_URL}`, TALLY_TEST_CLOCK_OFFSET_MS: '1.5h' }).catch(
      (e: { stderr: string }) => e,
    );
    expect((err as { stderr: string }).stderr).toContain('TALLY_TEST_CLOCK_OFFSET_MS must be an integer of milliseconds, got "1.5h"');
  });

  it('adds the preload to NODE_OPTIONS once, keeping the options already there', () => {
    const once = clockShiftEnv(5, '--max-old-space-size=512');
    expect(once).toEqual({ NODE_OPTIONS: `--max-old-space-size=512 --import=${CLOCK_SHIFT_PRELOAD_URL}`, TALLY_TEST_CLOCK_OFFSET_MS: '5' });
    expect(clockShiftEnv(-7, once.NODE_OPTIONS).NODE_OPTIONS).toBe(once.NODE_OPTIONS);
    expect(() => clockShiftEnv(0.5)).toThrow(/integer of milliseconds/);
  });
});
