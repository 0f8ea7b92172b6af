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
 * A figure from its measurement and report. `name`, in kebab-case, is its section heading in docs/BENCHMARKS.md and its
 * name on the command line; the result's markdown starts with the run line (date, machine, quick run) and a quick run's
 * summary ends with `[quick run]`.
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
