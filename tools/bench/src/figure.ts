import type { Baseline } from './baseline';
import type { Chart } from './charts';
import { machineLine } from './proc';

/** What a figure gets: run mode and a place to say what it is doing. */
export interface FigureContext {
  /** `--quick`: short runs (about 2 s each) to check that the figure works, not to publish numbers. */
  quick: boolean;
  /** `--profile`: also write CPU profiles of the measured process (node --cpu-prof) to this directory. */
  profileDir?: string;
  /** `--baseline <ref>`: that commit's checkout, for figures that measure it next to this one in the same run. */
  baseline?: Baseline;
  /** Progress lines (stderr). */
  log(line: string): void;
}

export interface FigureResult {
  /** One line, printed by `npm run bench`. */
  summary: string;
  /** The figure's section in docs/BENCHMARKS.md (without its `## name` heading). */
  markdown: string;
  /** Charts rendered to docs/charts/<figure>-<name>.svg and shown at the end of the section. */
  charts?: Chart[];
}

/**
 * A figure named (in kebab-case) as its section of docs/BENCHMARKS.md and on the command line: its markdown starts with
 * the run line (date, machine, quick run), a quick run's summary ends with `[quick run]`.
 */
export const figure = (name: string, report: (ctx: FigureContext) => Promise<FigureResult>) => ({
  name,
  async run(ctx: FigureContext): Promise<FigureResult> {
    const [at, machine] = [new Date().toISOString(), machineLine()];
    const r = await report(ctx);
    const summary = `${r.summary}${ctx.quick ? ' [quick run]' : ''}`;
    return { ...r, summary, markdown: `Run ${at} on ${machine}${ctx.quick ? ' (quick run)' : ''}.\n${r.markdown}` };
  },
});
export type Figure = ReturnType<typeof figure>;

/**
 * `run` of each side `rounds` times, every other round in reverse order (A B, B A, …), so that a drift in the machine's
 * load weighs on every side alike: each side's results, in the order they ran.
 */
export async function alternated<S extends string, T>(sides: readonly S[], rounds: number, run: (side: S, round: number) => Promise<T>) {
  const out = Object.fromEntries(sides.map((s) => [s, [] as T[]])) as Record<S, T[]>;
  for (let r = 0; r < rounds; r++) for (const side of r % 2 === 0 ? sides : sides.toReversed()) out[side].push(await run(side, r));
  return out;
}
