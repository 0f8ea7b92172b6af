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
});
