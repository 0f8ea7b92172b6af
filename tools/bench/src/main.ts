// npm run bench [-- <figure>...] [--quick] [--profile] [--baseline <ref>]: runs the named figures (default all) one after another,
// prints one summary line each, rewrites their sections of docs/BENCHMARKS.md and their charts in docs/charts
// (not with --quick, whose short runs only check that the figures work), and, after a run of every figure, the
// Summary section at the top. With --baseline, figures that can (ingest-e2e, freshness, query, write-cost) also run
// that commit's apps or libraries from a temporary git worktree in the same run and report the before/after ratios.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '@tally/testing';
import { checkoutBaseline } from './baseline';
import { renderSvg, writeCharts } from './charts';
import { FIGURES } from './figures';
import { machineLine } from './proc';
import { updateSection } from './report';

const names = FIGURES.map((f) => f.name).join(', ');
const usage = `usage: npm run bench [-- <figure>...] [--quick] [--profile] [--baseline <ref, e.g. main or HEAD~>]\nfigures: ${names}\n`;
const { values, positionals } = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        quick: { type: 'boolean' },
        profile: { type: 'boolean' },
        baseline: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    // An unknown option, or --baseline without its commit: one line and the usage, not a stack trace.
    process.stderr.write(`tally: ${(err as Error).message}\n${usage}`);
    process.exit(2);
  }
})();

if (values.help) {
  process.stdout.write(usage);
  process.exit(0);
}
const unknown = positionals.filter((p) => !FIGURES.some((f) => f.name === p));
if (unknown.length > 0) {
  process.stderr.write(`tally: unknown figure ${unknown.join(', ')}; figures: ${names}\n`);
  process.exit(2);
}
const quick = values.quick === true;
const chosen = positionals.length === 0 ? FIGURES : FIGURES.filter((f) => positionals.includes(f.name));
const docPath = join(REPO_ROOT, 'docs', 'BENCHMARKS.md');
const writeSection = (name: string, markdown: string, opts?: { first?: boolean }) =>
  writeFileSync(docPath, updateSection(existsSync(docPath) ? readFileSync(docPath, 'utf8') : '', name, markdown, opts));
const profileDir = values.profile ? join(REPO_ROOT, 'test-output', 'profiles') : undefined;
if (profileDir) mkdirSync(profileDir, { recursive: true });

const baseline = values.baseline === undefined ? undefined : checkoutBaseline(values.baseline);
if (baseline)
  process.stderr.write(
    `tally: baseline ${baseline.ref} = ${baseline.commit.slice(0, 10)} (${baseline.subject}) checked out in ${baseline.root}\n`,
  );

const [runStarted, startedAt, machine] = [performance.now(), new Date(), machineLine()];
const lines: Array<{ name: string; summary: string; seconds: number }> = [];
for (const figure of chosen) {
  const log = (line: string) => process.stderr.write(`[${figure.name}] ${line}\n`);
  const t0 = performance.now();
  let summary: string;
  try {
    const result = await figure.run({ quick, profileDir, log, ...(baseline ? { baseline } : {}) });
    summary = result.summary;
    if (quick) {
      // Render the charts anyway, so a quick run proves they render; write nothing.
      for (const c of result.charts ?? []) await renderSvg(c.spec);
    } else {
      const charts = await writeCharts(figure.name, result.charts ?? [], join(REPO_ROOT, 'docs', 'charts'));
      writeSection(figure.name, charts ? `${result.markdown.trim()}\n\n${charts}` : result.markdown);
    }
  } catch (err) {
    summary = `FAILED: ${err instanceof Error ? err.message : String(err)}`;
    if (err instanceof Error && err.stack) log(err.stack);
  }
  const seconds = (performance.now() - t0) / 1000;
  lines.push({ name: figure.name, summary, seconds });
  process.stdout.write(`${figure.name}: ${summary}\n`);
  log(`took ${duration(seconds)}`);
}

baseline?.remove();
const failed = lines.some((l) => l.summary.startsWith('FAILED: '));
const total = (performance.now() - runStarted) / 1000;
if (chosen.length > 1) {
  process.stdout.write(`\nsummary: ${chosen.length} figures in ${duration(total)}${quick ? ' (quick run)' : ''}\n`);
  for (const l of lines) process.stdout.write(`${l.name}: ${l.summary}\n`);
}
if (!quick && chosen.length === FIGURES.length) {
  const body = [
    `Run ${startedAt.toISOString()}: one \`npm run bench\` run of every figure, one after another, in ${duration(total)}, on`,
    `${machine} at the start and ${loadavg()[0]!.toFixed(1)} at the end. The machine has 2 cores and is shared (other`,
    "engineers' tests run on it meanwhile), so absolute numbers move from run to run; each figure compares within its own",
    'run. One line per figure, as `npm run bench` prints it; the sections below have the tables and charts.',
    '',
    ...lines.map((l) => `- **${l.name}** (${duration(l.seconds)}): ${l.summary}`),
  ].join('\n');
  writeSection('Summary', body, { first: true });
}
if (!quick) process.stderr.write(`tally: updated ${docPath}${failed ? ' (failed figures keep their previous section)' : ''}\n`);
if (profileDir) process.stderr.write(`tally: CPU profiles in ${profileDir}\n`);
process.exit(failed ? 1 : 0);

function duration(seconds: number): string {
  const s = Math.round(seconds);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
}
