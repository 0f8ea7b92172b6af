// node --import tsx measure-child.ts <figure> [--quick]: `measure` of figures/<figure>.ts, printed as one JSON line
// (run by measureInBaseline from a copy of this directory inside another commit's worktree).
import type { FigureContext } from './figure';

const [figure, flag] = process.argv.slice(2);
const { measure } = (await import(`./figures/${figure}.ts`)) as { measure(ctx: FigureContext): Promise<unknown> };
const result = await measure({ quick: flag === '--quick', log: (line) => process.stderr.write(`[${figure} baseline] ${line}\n`) });
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
