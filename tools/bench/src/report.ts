/**
 * docs/BENCHMARKS.md holds one `## <figure>` section per figure. Rewriting a figure's section keeps the previous
 * run's text under `### Previous run` (only one level deep), so a regression shows next to the new figure.
 */
export const PREVIOUS_HEADING = '### Previous run';

/** A new document's header (docs/BENCHMARKS.md keeps its own). */
const HEADER = '# Benchmarks\n';

interface Section {
  name: string;
  body: string;
}

function parse(doc: string): { header: string; sections: Section[] } {
  const lines = doc.split('\n');
  const starts: number[] = [];
  lines.forEach((l, i) => {
    if (/^## \S/.test(l)) starts.push(i);
  });
  if (starts.length === 0) return { header: doc.trim() === '' ? HEADER : doc, sections: [] };
  const header = lines.slice(0, starts[0]).join('\n');
  const sections = starts.map((start, k) => {
    const end = starts[k + 1] ?? lines.length;
    return { name: lines[start]!.slice(3).trim(), body: lines.slice(start + 1, end).join('\n') };
  });
  return { header, sections };
}

/** The current part of a section body, without its own "Previous run". */
function currentPart(body: string): string {
  const i = body.indexOf(`\n${PREVIOUS_HEADING}`);
  return (i < 0 ? body : body.slice(0, i)).trim();
}

/**
 * `doc` with the section of `name` replaced by `markdown`, the old current text kept as "Previous run". A new
 * section goes last, or first with `first`.
 */
export function updateSection(doc: string, name: string, markdown: string, opts: { first?: boolean } = {}): string {
  const { header, sections } = parse(doc);
  const existing = sections.find((s) => s.name === name);
  const previous = existing ? currentPart(existing.body) : '';
  const body = ['', markdown.trim(), '', ...(previous ? [PREVIOUS_HEADING, '', demote(previous), ''] : [])].join('\n');
  if (existing) existing.body = body;
  else if (opts.first) sections.unshift({ name, body });
  else sections.push({ name, body });
  return `${header.trimEnd()}\n\n${sections.map((s) => `## ${s.name}\n${s.body.trimEnd()}\n`).join('\n')}`;
}

/**
 * Headings inside a previous run go one level down so they stay under "Previous run"; its charts are left out
 * (their files now hold the new run's charts).
 */
function demote(text: string): string {
  return text
    .replace(/^(#{3,5}) /gm, '#$1 ')
    .replace(/^!\[[^\]]*\]\(charts\/[^)]*\)\n?/gm, '')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}
