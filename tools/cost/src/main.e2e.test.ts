import { startProcess } from '@tally/testing';
import { describe, expect, it } from 'vitest';

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

  it('sizes the default workload of docs/SCALING.md', async () => {
    const r = await run('size');
    expect(r.code).toBe(0);
    expect(r.output).toMatch(/Redis Cluster masters\s+\d+/);
    // The table of docs/SCALING.md, "Result", and nothing before it.
    expect(r.output).toMatch(/^open rows\s+[\d,]+\n/);
  });
});
