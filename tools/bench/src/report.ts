/**
 * docs/BENCHMARKS.md holds one `## <figure>` section per figure. Rewriting a figure's section keeps the previous
 * run's text under `### Previous run` (only one level deep), so a regression shows next to the new figure.
 */
export const PREVIOUS_HEADING = '### Previous run';

/** `doc` with the section of `name` replaced by `markdown`; a new section goes last, or first with `first`. */
export function updateSection(doc: string, name: string, markdown: string, opts: { first?: boolean } = {}): string {
  // The header (a new document's is `# Benchmarks`), then one part per `## ` heading.
  const [header, ...parts] = (doc.trim() === '' ? '# Benchmarks\n' : doc).split(/^(?=## \S)/m);
  const sections = parts.map((part) => {
    const [heading, ...body] = part.split('\n');
    return { name: heading!.slice(3).trim(), body: body.join('\n') };
  });
  const existing = sections.find((s) => s.name === name);
  // The current part of its body, without its own "Previous run".
  const current = existing?.body.split(`\n${PREVIOUS_HEADING}`)[0]!.trim();
  const body = ['', markdown.trim(), '', ...(current ? [PREVIOUS_HEADING, '', demote(current), ''] : [])].join('\n');
  if (existing) existing.body = body;
  else if (opts.first) sections.unshift({ name, body });
  else sections.push({ name, body });
  return `${header!.trimEnd()}\n\n${sections.map((s) => `## ${s.name}\n${s.body.trimEnd()}\n`).join('\n')}`;
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
