import { describe, expect, it } from 'vitest';
import { QUEUE_NAMES } from '@tally/queues';
import { runDlqCli, table } from './cli';
import { USAGE } from './usage';
import { assertQueueName, DlqError, formatAge, matches, parseDuration, parseFilter, replayHazard, type FailedJob } from './dlq';

const job = (over: Partial<FailedJob> = {}): FailedJob => ({
  queue: 'events',
  id: 'batch-abc',
  name: 'events',
  enqueuedAt: 1_000_000,
  failedAt: 1_000_000,
  attemptsMade: 10,
  reason: 'DynamoDB said no',
  acceptedAt: 1_000_000,
  ...over,
});

describe('parseDuration', () => {
  it('reads units and combinations', () => {
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('10m')).toBe(600_000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('7d')).toBe(604_800_000);
    expect(parseDuration('1w')).toBe(604_800_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('1.5h')).toBe(5_400_000);
  });

  it('refuses anything else, naming the text', () => {
    for (const bad of ['', '10', 'm', '10 m', '10min', '-5m', '10m ', 'soon']) {
      expect(() => parseDuration(bad), bad).toThrowError(DlqError);
    }
    expect(() => parseDuration('10min')).toThrowError(/^"10min" is not a duration; use e\.g\. 30s, 10m/);
  });
});

describe('formatAge', () => {
  it('shows at most two units', () => {
    expect(formatAge(-5)).toBe('0s');
    expect(formatAge(59_999)).toBe('59s');
    expect(formatAge(600_000)).toBe('10m');
    expect(formatAge(3_600_000)).toBe('1h');
    expect(formatAge(3_900_000)).toBe('1h 5m');
    expect(formatAge(47 * 3_600_000)).toBe('47h');
    expect(formatAge(50 * 3_600_000)).toBe('2d 2h');
    expect(formatAge(14 * 86_400_000)).toBe('14d');
  });
});

describe('filters', () => {
  const now = 1_000_000 + 30 * 60_000; // the job failed 30 minutes ago

  it('match by age since the failure and by reason, all conditions together', () => {
    expect(matches(job(), parseFilter({}), now)).toBe(true);
    expect(matches(job(), parseFilter({ olderThan: '10m' }), now)).toBe(true);
    expect(matches(job(), parseFilter({ olderThan: '31m' }), now)).toBe(false);
    expect(matches(job(), parseFilter({ newerThan: '1h' }), now)).toBe(true);
    expect(matches(job(), parseFilter({ newerThan: '29m' }), now)).toBe(false);
    expect(matches(job(), parseFilter({ reason: 'dynamodb' }), now)).toBe(true);
    expect(matches(job(), parseFilter({ reason: '^said' }), now)).toBe(false);
    expect(matches(job(), parseFilter({ reason: 'said', olderThan: '1h' }), now)).toBe(false);
    expect(matches(job(), parseFilter({ olderThan: '10m', newerThan: '1h' }), now)).toBe(true);
  });

  it('--reason matches anywhere in the reason, so an id matches longer ids unless anchored, as the usage says', () => {
    // The aggregator's reason for a batch of a store with no tenant (apps/bucket-aggregator events.processor.ts).
    const refused = (store: string) => job({ reason: `unknown store ${store}: it has no tenant; batch b1 not applied (nothing written)` });
    const unanchored = parseFilter({ reason: 'unknown store STORE1' });
    expect(['STORE1', 'STORE10', 'STORE123'].map((s) => matches(refused(s), unanchored, now))).toEqual([true, true, true]);
    const anchored = parseFilter({ reason: '^unknown store STORE1:' });
    expect(['STORE1', 'STORE10', 'STORE123', 'store1'].map((s) => matches(refused(s), anchored, now))).toEqual([true, false, false, true]);
    const exact = parseFilter({ reason: '^unknown store (?-i:STORE1):' });
    expect(['STORE1', 'store1'].map((s) => matches(refused(s), exact, now))).toEqual([true, false]);
    expect(USAGE).toContain("'unknown store S1' matches S10 and S123 too: anchor it, '^unknown store S1:'");
  });

  it('refuse a bad regex and an empty age range', () => {
    expect(() => parseFilter({ reason: '(' })).toThrowError(/^--reason: not a regular expression/);
    expect(() => parseFilter({ olderThan: '2h', newerThan: '1h' })).toThrowError(/no job can match both/);
  });
});

describe('replayHazard', () => {
  const window = 86_400_000;

  it('refuses an events batch accepted longer ago than the dedupe window', () => {
    const j = job({ acceptedAt: 0, failedAt: 0 });
    expect(replayHazard(j, window - 1, { dedupeWindowMs: window })).toBeUndefined();
    expect(replayHazard(j, window, { dedupeWindowMs: window })).toMatch(
      /^batch accepted 24h ago, past the dedupe window \(24h\): if it was applied before it failed, a replay would count it twice/,
    );
    expect(replayHazard(j, window, { dedupeWindowMs: window, pastDedupeWindow: true })).toBeUndefined();
  });

  it('never refuses flush or seal jobs: the watermark makes them idempotent at any age', () => {
    for (const queue of ['dynamo-writes', 'seal'] as const) {
      expect(replayHazard(job({ queue, acceptedAt: undefined, enqueuedAt: 0 }), 30 * window, { dedupeWindowMs: window })).toBeUndefined();
    }
  });
});

describe('table', () => {
  it('aligns columns and keeps each reason on one cut line', () => {
    const lines = table(
      [
        job({ id: 'a', reason: 'line one\n   at stack' }),
        job({ queue: 'dynamo-writes', id: 'flush-xyz', reason: 'x'.repeat(150), attemptsMade: 8 }),
      ],
      1_000_000 + 3_900_000,
    );
    expect(lines).toEqual([
      'QUEUE          ID         AGE    ATTEMPTS  REASON',
      'events         a          1h 5m  10        line one at stack',
      `dynamo-writes  flush-xyz  1h 5m  8         ${'x'.repeat(99)}…`,
    ]);
  });
});

describe('assertQueueName', () => {
  it('knows the four queues', () => {
    expect(assertQueueName('dynamo-writes')).toBe('dynamo-writes');
    expect(assertQueueName('maintenance')).toBe('maintenance');
    expect(() => assertQueueName('dynamo_writes')).toThrowError(
      /^unknown queue "dynamo_writes"; queues: events, seal, dynamo-writes, maintenance$/,
    );
  });
});

describe('USAGE', () => {
  it('names every queue (usage.ts imports nothing, to keep --help light)', () => {
    expect(USAGE).toContain(`queues: ${QUEUE_NAMES.join(', ')}.`);
  });

  it('fits in 100 columns', () => {
    expect(USAGE.split('\n').filter((line) => line.length > 100)).toEqual([]);
  });
});

/** One command line that must not connect (deps refuses): its exit code and lines. */
async function offline(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runDlqCli(argv, () => Promise.reject(new Error('not connecting')), {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
  });
  return { code, out, err };
}

describe('a usage error', () => {
  const SEE = 'see: npm run dlq -- --help';

  it('is its reason, the synopsis of the command concerned and where the help is, not the whole help (exit 2)', async () => {
    expect(await offline('purge', 'events', '--all')).toEqual({
      code: 2,
      out: [],
      err: [
        'tally: purge deletes failed jobs for good and never asks: add --yes (or --dry-run to see what it would delete)',
        'usage: dlq purge <queue> <id> (--yes | --dry-run)',
        '       dlq purge <queue> (--all | filters) (--yes | --dry-run)',
        SEE,
      ],
    });
    expect(await offline('list', '--queue', 'bogus')).toEqual({
      code: 2,
      out: [],
      err: [
        'tally: unknown queue "bogus"; queues: events, seal, dynamo-writes, maintenance',
        'usage: dlq list [--queue <q>] [filters] [--limit <n>] [--json]',
        SEE,
      ],
    });
    expect(await offline('frobnicate')).toEqual({ code: 2, out: [], err: ['tally: unknown command "frobnicate"', SEE] });
    // parseArgs' own refusals too, with the synopsis of the command they were given to.
    const bogus = await offline('show', 'events', 'j1', '--bogus');
    expect([bogus.code, bogus.err.slice(1)]).toEqual([2, ['usage: dlq show <queue> <id> [--json]', SEE]]);
    expect(bogus.err[0]).toBe("tally: Unknown option '--bogus'");

    for (const argv of [
      ['list', '--reason', '('],
      ['list', '--limit', 'x'],
      // Number('') is 0, ' 5' and '1e3' numbers too: a limit is digits only.
      ['list', '--limit', ''],
      ['list', '--limit', ' 5'],
      ['list', '--limit', '1e3'],
      // An empty job id names no job: refused before connecting, not "no job" after.
      ['show', 'events', ''],
      ['replay', 'events', ''],
      ['purge', 'events', '', '--yes'],
      ['list', 'events'],
      ['list', '--queue'],
      ['--bogus'],
      ['show', 'events'],
      ['show', 'nope', 'j1'],
      ['replay', 'events'],
      ['replay', 'events', '--all', '--reason', 'x'],
      ['replay', 'events', 'j1', '--limit', '1'],
      ['purge', 'events', 'j1', '--json', '--yes'],
      ['purge', 'events', '--older-than', 'soon', '--yes'],
      ['--', '--reason', 'x'],
    ]) {
      const r = await offline(...argv);
      expect([r.code, r.out], argv.join(' ')).toEqual([2, []]);
      expect(r.err.length, argv.join(' ')).toBeLessThan(6);
      expect(r.err[0], argv.join(' ')).toMatch(/^tally: /);
      expect(r.err.at(-1), argv.join(' ')).toBe(SEE);
    }
  });

  it('--help (and help, or no command) still prints the whole help on stdout, exit 0', async () => {
    for (const argv of [['--help'], ['help'], [], ['replay', '-h']])
      expect(await offline(...argv)).toEqual({ code: 0, out: [USAGE], err: [] });
  });
});

describe('the synopses', () => {
  const OPTIONS: Record<string, string[]> = {
    queue: ['--queue', 'events'],
    reason: ['--reason', 'x'],
    'older-than': ['--older-than', '1h'],
    'newer-than': ['--newer-than', '1h'],
    limit: ['--limit', '1'],
    all: ['--all'],
    'dry-run': ['--dry-run'],
    yes: ['--yes'],
    json: ['--json'],
    'past-dedupe-window': ['--past-dedupe-window'],
  };
  const FILTERS = ['--reason', '--older-than', '--newer-than'];
  /** What each command takes, written out here: the CLI derives it from its usage text, which this pins. */
  const TAKES: Record<string, string[]> = {
    list: ['--queue', ...FILTERS, '--limit', '--json'],
    show: ['--json'],
    replay: ['--all', ...FILTERS, '--dry-run', '--past-dedupe-window'],
    purge: ['--all', ...FILTERS, '--dry-run', '--yes'],
  };

  it('are those of the commands the CLI runs, and no other: runCli refuses a command without one as unknown', () => {
    const listed = new Set([...USAGE.matchAll(/^ {2}([a-z][\w-]*) /gm)].map(([, command]) => command));
    expect([...listed].sort()).toEqual(Object.keys(TAKES).sort());
  });

  it('show each command with exactly the options it takes (--past-dedupe-window: replay, with an id or not)', async () => {
    const commands: Record<string, string[]> = {
      list: ['list'],
      show: ['show', 'events', 'j1'],
      replay: ['replay', 'events'],
      purge: ['purge', 'events'],
    };
    for (const [command, argv] of Object.entries(commands)) {
      const shown = [...USAGE.matchAll(new RegExp(`^  ${command} (.*?)(?: {2,}|$)`, 'gm'))].flatMap(([, synopsis]) =>
        [...synopsis!.matchAll(/--[a-z0-9][a-z0-9-]*|\bfilters\b/gi)].flatMap(([o]) => (o === 'filters' ? FILTERS : [o])),
      );
      const taken: string[] = [];
      for (const [option, args] of Object.entries(OPTIONS)) {
        const r = await offline(...argv, ...args);
        if (!r.err[0]?.startsWith(`tally: ${command} takes no --${option}`)) taken.push(`--${option}`);
      }
      expect([...new Set(shown)].sort(), command).toEqual(taken.sort());
      expect(taken.sort(), command).toEqual([...TAKES[command]!].sort());
    }
    const replay = (await offline('replay', 'events')).err.slice(1, -1);
    expect(replay).toEqual([
      'usage: dlq replay <queue> <id> [--dry-run] [--past-dedupe-window]',
      '       dlq replay <queue> (--all | filters) [--dry-run] [--past-dedupe-window]',
    ]);
    // Taken with one id and in bulk: a dry run of each gets as far as connecting.
    for (const argv of [
      ['replay', 'events', 'j1'],
      ['replay', 'events', '--all'],
    ])
      expect(await offline(...argv, '--past-dedupe-window', '--dry-run')).toEqual({ code: 1, out: [], err: ['tally: not connecting'] });
  });
});
