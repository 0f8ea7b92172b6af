import { FIXED_MEASURED, type Measured } from './sizing';

/**
 * The measured figures of `npm run cost -- size`, read from docs/BENCHMARKS.md as `npm run bench` writes it: each
 * from the current run of its `## <figure>` section (the text above its `### Previous run`, tools/bench report.ts),
 * found by the headers and first cells of the tables the bench prints, so a new run of a figure is what the sizing
 * uses from then on. Each comes with where it was read (figure and run time), or the reason it could not be.
 */
export type Figure = { value: number; from: string } | { missing: string };

/** The current part of a figure's section, and its run time when it says. */
function section(doc: string, name: string): { text: string; from: string } | undefined {
  const start = doc.search(new RegExp(`^## ${name}$`, 'm'));
  if (start < 0) return undefined;
  const rest = doc.slice(start + name.length + 4);
  const end = rest.search(/^## |^### Previous run$/m);
  const text = end < 0 ? rest : rest.slice(0, end);
  const run = /^Run (\d{4}-\d\d-\d\dT[\d:.]+Z)/m.exec(text)?.[1];
  return { text, from: `${name}${run ? `, run ${run}` : ''}` };
}

/** The first table of `text` with a column whose header includes `column`: its rows as header → cell. */
function table(text: string, column: string): Array<Record<string, string>> | undefined {
  const cells = (line: string) =>
    line
      .split('|')
      .slice(1, -1)
      .map((c) => c.trim().replaceAll('**', ''));
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.startsWith('|') || (i > 0 && lines[i - 1]!.startsWith('|'))) continue;
    const header = cells(lines[i]!);
    if (!header.some((h) => h.includes(column))) continue;
    const rows: Array<Record<string, string>> = [];
    for (let j = i + 2; j < lines.length && lines[j]!.startsWith('|'); j++)
      rows.push(Object.fromEntries(cells(lines[j]!).map((c, k) => [header[k]!, c])));
    return rows;
  }
  return undefined;
}

/** `column` (a header piece) of the row whose `key` column (a header piece) starts with `first`, as a number. */
function cell(rows: Array<Record<string, string>>, key: string, first: string, column: string): number | undefined {
  const of = (row: Record<string, string>, piece: string) => Object.entries(row).find(([h]) => h.includes(piece))?.[1];
  const row = rows.find((r) => of(r, key)?.startsWith(first));
  const value = row && Number(of(row, column)?.replaceAll(',', ''));
  return value !== undefined && Number.isFinite(value) && value > 0 ? value : undefined;
}

/** Where each figure is: its section, and how it is read from the section's current run (`what`, for the error). */
const FIGURES: Array<{
  figure: Exclude<keyof Measured, keyof typeof FIXED_MEASURED>;
  section: string;
  what: string;
  read: (text: string) => number | undefined;
}> = [
  {
    figure: 'writeUnitsPerMillionEvents',
    section: 'write-cost',
    what: 'WCU per million events of "Tally default policy"',
    read: (t) => cell(table(t, 'WCU per million events') ?? [], 'design', 'Tally default policy', 'WCU per million events'),
  },
  {
    figure: 'aggregatorEventsPerSecond',
    section: 'aggregator-apply',
    what: '"events/s applied"',
    read: (t) => cell(table(t, 'value') ?? [], 'figure', 'events/s applied', 'value'),
  },
  {
    figure: 'bytesPerDedupeRecord',
    section: 'aggregator-apply',
    what: '"Redis bytes per dedupe record"',
    read: (t) => cell(table(t, 'value') ?? [], 'figure', 'Redis bytes per dedupe record', 'value'),
  },
  {
    figure: 'collectorCpuMsPer1000Events',
    section: 'collector-ingest',
    what: 'collector CPU ms / 1000 events with 1000-event batches',
    read: (t) => cell(table(t, 'collector CPU ms / 1000 events') ?? [], 'batch', '1000', 'collector CPU ms / 1000 events'),
  },
  {
    figure: 'endToEndEventsPerSecondPerRedis',
    section: 'ingest-e2e',
    what: 'events/s end to end with 1000-event batches',
    read: (t) => cell(table(t, 'events/s end to end') ?? [], 'batch', '1000', 'events/s end to end'),
  },
  {
    figure: 'bytesPerOpenRow',
    section: 'scale',
    what: 'Redis MB of two points of 10,000 stores with different open rows',
    // The memory the extra open rows took: (MB at the most rows - MB at the fewest) / (the rows between them).
    read: (t) => {
      const n = (s: string | undefined) => Number(s?.replaceAll(',', ''));
      const points = (table(t, 'Redis MB') ?? [])
        .filter((r) => r['stores'] === '10,000')
        .map((r) => ({ rows: n(r['open rows']), bytes: n(r['Redis MB']) * 1e6 }))
        .sort((a, b) => a.rows - b.rows);
      const [few, many] = [points[0], points.at(-1)];
      const bytes = few && many && many.rows > few.rows ? (many.bytes - few.bytes) / (many.rows - few.rows) : NaN;
      return bytes > 0 ? Math.round(bytes) : undefined;
    },
  },
];

/**
 * The sizing's measured figures: each one `given` (a flag), else a fixed one ({@link FIXED_MEASURED}), else read from
 * docs/BENCHMARKS.md (`doc`; an Error when it could not be read), with where it came from or why it is missing.
 */
export function measuredFigures(doc: string | Error, given: Partial<Record<keyof Measured, Figure>> = {}): Record<keyof Measured, Figure> {
  const out: Partial<Record<keyof Measured, Figure>> = { ...FIXED_MEASURED };
  for (const f of FIGURES) {
    if (doc instanceof Error) {
      out[f.figure] = { missing: `cannot read docs/BENCHMARKS.md (${doc.message})` };
      continue;
    }
    const s = section(doc, f.section);
    const value = s && f.read(s.text);
    out[f.figure] =
      value !== undefined
        ? { value, from: `docs/BENCHMARKS.md ${s!.from}` }
        : { missing: `docs/BENCHMARKS.md has no ${s ? `${f.what} in its current ${f.section} run` : `## ${f.section} section`}` };
  }
  return { ...out, ...given } as Record<keyof Measured, Figure>;
}
