import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '@tally/testing';
import type { FigureContext } from './figure';

const SRC = dirname(fileURLToPath(import.meta.url));

/**
 * `--baseline` for figures that measure libraries in-process: runs `measure` of figures/<figure>.ts against the
 * baseline commit's sources. This checkout's tools/bench/src is copied into the baseline worktree, so its `@tally/*`
 * imports (and the apps it starts) resolve to that commit's code, and the figure's `measure` prints its result as
 * one JSON line (this file run as a script, below); the report of both is then written here.
 */
export async function measureInBaseline<T>(ctx: FigureContext, figure: string, rulesFile?: string): Promise<T> {
  const b = ctx.baseline!;
  ctx.log(`the same measurement with ${b.ref}'s libraries (${b.commit.slice(0, 10)})`);
  const dir = join(b.root, 'tools', 'bench', 'src-now');
  cpSync(SRC, dir, { recursive: true });
  return measureIn<T>(ctx, figure, b.root, dir, 'baseline', rulesFile);
}

/** `measure` of figures/<figure>.ts with this checkout's libraries, in a child process like measureInBaseline's. */
export function measureHere<T>(ctx: FigureContext, figure: string, rulesFile?: string): Promise<T> {
  ctx.log(`the measurement with this checkout's libraries, in a child process`);
  return measureIn<T>(ctx, figure, REPO_ROOT, SRC, 'this checkout', rulesFile);
}

/** `rulesFile`: a rules JSON file for `measure` to use instead of the default rules (both sides given the same work). */
async function measureIn<T>(ctx: FigureContext, figure: string, cwd: string, src: string, side: string, rulesFile?: string): Promise<T> {
  const flags = [...(ctx.quick ? ['--quick'] : []), ...(rulesFile ? ['--rules', rulesFile] : [])];
  const args = ['--import', 'tsx', join(src, 'in-checkout.ts'), figure, side, ...flags];
  const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${figure} (${side === 'baseline' ? `against ${ctx.baseline!.ref}` : side}) failed (exit ${code})`);
  return JSON.parse(out.trim().split('\n').at(-1)!) as T;
}

// node --import tsx in-checkout.ts <figure> <side> [--quick] [--rules <file>] (in the baseline worktree, or this checkout): `measure` of
// figures/<figure>.ts, printed as one JSON line. Not awaited at the top level: figures/<figure>.ts imports this module back.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { quick: { type: 'boolean', default: false }, rules: { type: 'string' } },
  });
  const [figure, side] = positionals;
  const log = (line: string) => process.stderr.write(`[${figure} ${side}] ${line}\n`);
  type Measure = (ctx: FigureContext, rulesFile?: string) => Promise<unknown>;
  void import(`./figures/${figure}.ts`).then(async ({ measure }: { measure: Measure }) => {
    process.stdout.write(`${JSON.stringify(await measure({ quick: values.quick, log }, values.rules))}\n`);
    process.exit(0);
  });
}
