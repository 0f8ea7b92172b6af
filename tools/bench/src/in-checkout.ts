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
 * `measure` of figures/<figure>.ts in a child process (this file run as a script, below), with this checkout's libraries
 * or (`baseline`) those of the `--baseline` commit: this tools/bench/src is then copied into that commit's worktree, so
 * that its `@tally/*` imports (and the apps it starts) resolve to that commit's code. `rulesFile`: rules for `measure`
 * instead of the default rules (both sides given the same work).
 */
export async function measureIn<T>(ctx: FigureContext, figure: string, side: 'baseline' | 'this checkout', rulesFile?: string): Promise<T> {
  let [cwd, src] = [REPO_ROOT, SRC];
  if (side === 'baseline') {
    const b = ctx.baseline!;
    ctx.log(`the same measurement with ${b.ref}'s libraries (${b.commit.slice(0, 10)})`);
    [cwd, src] = [b.root, join(b.root, 'tools', 'bench', 'src-now')];
    cpSync(SRC, src, { recursive: true });
  } else ctx.log(`the measurement with this checkout's libraries, in a child process`);
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
