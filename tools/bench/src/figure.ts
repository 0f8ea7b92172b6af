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

export interface Figure {
  /** Kebab-case; the section heading in docs/BENCHMARKS.md and the name on the command line. */
  name: string;
  run(ctx: FigureContext): Promise<FigureResult>;
}

/**
 * A figure from its measurement and report: the result's markdown starts with the run line (date, machine, quick
 * run) and a quick run's summary ends with `[quick run]`.
 */
export function figure(name: string, report: (ctx: FigureContext) => Promise<FigureResult>): Figure {
  return {
    name,
    async run(ctx) {
      const [at, machine] = [new Date().toISOString(), machineLine()];
      const r = await report(ctx);
      const quick = ctx.quick ? ' (quick run)' : '';
      return {
        ...r,
        summary: `${r.summary}${ctx.quick ? ' [quick run]' : ''}`,
        markdown: `Run ${at} on ${machine}${quick}.\n${r.markdown}`,
      };
    },
  };
}
