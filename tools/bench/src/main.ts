// npm run bench [-- <figure>...] [--quick] [--profile]: runs the named figures (default all), prints one summary
// line each and rewrites their sections of docs/BENCHMARKS.md (not with --quick, whose 2 s runs only check that
// the figures work).
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '@tally/testing';
import { FIGURES } from './figures';
import { updateSection } from './report';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { quick: { type: 'boolean' }, profile: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
});

if (values.help) {
  process.stdout.write(`usage: npm run bench [-- <figure>...] [--quick] [--profile]\nfigures: ${FIGURES.map((f) => f.name).join(', ')}\n`);
  process.exit(0);
}

const unknown = positionals.filter((p) => !FIGURES.some((f) => f.name === p));
if (unknown.length > 0) {
  process.stderr.write(`tally: unknown figure ${unknown.join(', ')}; figures: ${FIGURES.map((f) => f.name).join(', ')}\n`);
  process.exit(2);
}
const chosen = positionals.length === 0 ? FIGURES : FIGURES.filter((f) => positionals.includes(f.name));
const docPath = join(REPO_ROOT, 'docs', 'BENCHMARKS.md');
const profileDir = values.profile ? join(REPO_ROOT, 'test-output', 'profiles') : undefined;
if (profileDir) mkdirSync(profileDir, { recursive: true });

let failed = false;
for (const figure of chosen) {
  const log = (line: string) => process.stderr.write(`[${figure.name}] ${line}\n`);
  try {
    const result = await figure.run({ quick: values.quick === true, profileDir, log });
    process.stdout.write(`${figure.name}: ${result.summary}\n`);
    if (!values.quick) {
      const doc = existsSync(docPath) ? readFileSync(docPath, 'utf8') : '';
      writeFileSync(docPath, updateSection(doc, figure.name, result.markdown));
    }
  } catch (err) {
    failed = true;
    process.stdout.write(`${figure.name}: FAILED: ${err instanceof Error ? err.message : String(err)}\n`);
    if (err instanceof Error && err.stack) log(err.stack);
  }
}
if (!values.quick && !failed) process.stderr.write(`tally: updated ${docPath}\n`);
if (profileDir) process.stderr.write(`tally: CPU profiles in ${profileDir}\n`);
process.exit(failed ? 1 : 0);
