import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT, startProcess } from '@tally/testing';
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

  it("sizes the default workload of docs/SCALING.md with docs/BENCHMARKS.md's latest figures, each named on stderr", async () => {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--no-warnings', '--import', 'tsx', main, 'size']);
    // The table of docs/SCALING.md, "Result", and nothing else on stdout.
    const scaling = readFileSync(path.join(REPO_ROOT, 'docs', 'SCALING.md'), 'utf8');
    expect(stdout).toBe(`${/## Result\n\n```\n([\s\S]*?)\n```/.exec(scaling)![1]}\n`);
    const lines = stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(8);
    expect(lines).toContainEqual(
      expect.stringMatching(/^tally cost size: --aggregator-eps \d+ \(docs\/BENCHMARKS\.md aggregator-apply, run 20\S+Z\)$/),
    );
    expect(lines).toContainEqual(expect.stringMatching(/^tally cost size: --e2e-eps \d+ \(docs\/BENCHMARKS\.md ingest-e2e, run 20\S+Z\)$/));
    // A figure given on the command line is used and said so.
    const given = await promisify(execFile)(process.execPath, [
      '--no-warnings',
      '--import',
      'tsx',
      main,
      'size',
      '--aggregator-eps',
      '1000',
    ]);
    expect(given.stderr).toContain('tally cost size: --aggregator-eps 1000 (given)\n');
    expect(given.stdout).toMatch(/^aggregator replicas\s+100$/m);
  });
});
