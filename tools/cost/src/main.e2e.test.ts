import { readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startProcess } from '@tally/testing';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MEASURED } from './sizing';

const main = new URL('./main.ts', import.meta.url).pathname;

async function run(...args: string[]) {
  const p = await startProcess(process.execPath, ['--no-warnings', '--import', 'tsx', main, ...args], { name: 'cost' });
  const exit = await p.exited;
  return { code: exit.code, output: p.output() };
}

describe('npm run cost', () => {
  it('prints its usage with --help, and answers an unknown or incomplete option with it and exit 2', async () => {
    const help = await run('--help');
    expect(help.code).toBe(0);
    expect(help.output).toMatch(/^usage: npm run cost -- \[--aggregator URL\].*\n.*\n\s+npm run cost -- size \[--stores N\]/);
    const unknown = await run('size', '--bogus', '1');
    expect(unknown.code).toBe(2);
    expect(unknown.output).toContain("tally cost: Unknown option '--bogus'");
    expect(unknown.output).toContain('usage: npm run cost');
    const missing = await run('--price');
    expect(missing.code).toBe(2);
    expect(missing.output).toContain("tally cost: Option '--price <value>' argument missing");
  });

  it('sizes the default workload of docs/SCALING.md from the figures that document quotes, and prints its Result', async () => {
    const scaling = readFileSync(path.join(REPO_ROOT, 'docs', 'SCALING.md'), 'utf8');
    const input = (label: string) => {
      const row = scaling.split('\n').find((l) => l.startsWith(`| ${label} |`));
      return Number(row?.split('|')[2]!.trim().replaceAll(',', ''));
    };
    expect({
      writeUnitsPerMillionEvents: input('Write units per million events (default rules)'),
      readUnitsPerMillionEvents: input("Writers' read units per million events (default rules)"),
      readUnitsPerQuery: input('Read units per query'),
      bytesPerOpenRow: input('Redis bytes per open row'),
      bytesPerStore: input('Redis bytes per store'),
      bytesPerDedupeRecord: input('Redis bytes per dedupe record'),
      aggregatorEventsPerSecond: input('Events/s one aggregator process applies (100-event batches)'),
      collectorCpuMsPer1000Events: input('Collector CPU ms per 1,000 events (100-event batches)'),
      endToEndEventsPerSecondPerRedis: input('Events/s end to end on one Redis (all apps on 2 shared cores, 100-event batches)'),
    }).toEqual(DEFAULT_MEASURED);
    const r = await run('size');
    expect(r.code).toBe(0);
    // The table of docs/SCALING.md, "Result", and nothing else.
    expect(r.output.trimEnd()).toBe(/## Result\n\n```\n([\s\S]*?)\n```/.exec(scaling)![1]);
  });
});
