import { startProcess } from '@tally/testing';
import { describe, expect, it } from 'vitest';

const main = new URL('./main.ts', import.meta.url).pathname;

async function run(...args: string[]) {
  const p = await startProcess(process.execPath, ['--no-warnings', '--import', 'tsx', main, ...args], { name: 'bench' });
  const exit = await p.exited;
  return { code: exit.code, output: p.output() };
}

describe('npm run bench', () => {
  it('answers an unknown option, or --baseline without its commit, with one line and its usage, exit 2, running nothing', async () => {
    const missing = await run('ingest-e2e', '--baseline');
    expect(missing.code).toBe(2);
    expect(missing.output).toContain("tally: Option '--baseline <value>' argument missing");
    expect(missing.output).toContain('usage: npm run bench');
    expect(missing.output).not.toMatch(/\n\s+at /); // no stack trace
    const unknown = await run('--bogus');
    expect(unknown.code).toBe(2);
    expect(unknown.output).toContain("tally: Unknown option '--bogus'");
    const figure = await run('no-such-figure');
    expect(figure.code).toBe(2);
    expect(figure.output).toContain('tally: unknown figure no-such-figure; figures: collector-ingest');
  });
});
