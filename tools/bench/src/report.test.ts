import { describe, expect, it } from 'vitest';
import { PREVIOUS_HEADING, updateSection } from './report';

describe('updateSection', () => {
  it('creates the document and a section', () => {
    const doc = updateSection('', 'collector-ingest', '| a |\n| 1 |');
    expect(doc).toMatch(/^# Benchmarks\n/);
    expect(doc).toContain('## collector-ingest\n\n| a |\n| 1 |\n');
    expect(doc).not.toContain(PREVIOUS_HEADING);
  });

  it('keeps the previous run of a figure (one level deep) and leaves other figures alone', () => {
    let doc = updateSection('', 'collector-ingest', 'run 1');
    doc = updateSection(doc, 'other', 'other 1');
    doc = updateSection(doc, 'collector-ingest', 'run 2\n\n### detail\nx');
    expect(doc).toContain(`## collector-ingest\n\nrun 2\n\n### detail\nx\n\n${PREVIOUS_HEADING}\n\nrun 1\n`);
    doc = updateSection(doc, 'collector-ingest', 'run 3');
    const section = doc.slice(doc.indexOf('## collector-ingest'), doc.indexOf('## other'));
    expect(section).toBe(`## collector-ingest\n\nrun 3\n\n${PREVIOUS_HEADING}\n\nrun 2\n\n#### detail\nx\n\n`);
    expect(section).not.toContain('run 1');
    expect(doc).toContain('## other\n\nother 1\n');
    expect(doc.match(/^# Benchmarks$/gm)).toHaveLength(1);
  });

  it('puts a new section first when asked, and leaves a previous run without its charts', () => {
    let doc = updateSection('', 'a', 'a 1');
    doc = updateSection(doc, 'Summary', 'sum 1', { first: true });
    expect(doc.indexOf('## Summary')).toBeLessThan(doc.indexOf('## a'));
    doc = updateSection(doc, 'a', 'a 2\n\n![chart of a](charts/a-x.svg)');
    doc = updateSection(doc, 'a', 'a 3\n\n![chart of a](charts/a-x.svg)');
    const section = doc.slice(doc.indexOf('## a'));
    expect(section).toBe(`## a\n\na 3\n\n![chart of a](charts/a-x.svg)\n\n${PREVIOUS_HEADING}\n\na 2\n`);
    doc = updateSection(doc, 'Summary', 'sum 2', { first: true });
    expect(doc.indexOf('## Summary')).toBeLessThan(doc.indexOf('## a'));
    expect(doc).toContain(`## Summary\n\nsum 2\n\n${PREVIOUS_HEADING}\n\nsum 1\n`);
  });
});
