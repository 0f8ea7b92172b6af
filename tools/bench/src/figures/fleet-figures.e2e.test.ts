import { describe, expect, it } from 'vitest';
import { renderSvg } from '../charts';
import type { Figure, FigureResult } from '../figure';
import { drainFigure } from './drain';
import { freshnessFigure } from './freshness';
import { ingestE2eFigure } from './ingest-e2e';

// The quick variant of each figure that drives a whole fleet (a few seconds of load each): proves that the figure
// runs end to end and reports numbers, not how fast anything is (no thresholds: the machine is shared).

async function runQuick(figure: Figure): Promise<{ result: FigureResult; lines: string[] }> {
  const lines: string[] = [];
  const result = await figure.run({ quick: true, log: (l) => lines.push(l) });
  expect(result.summary).toMatch(/\[quick run\]$/);
  expect(result.markdown).toContain('(quick run)');
  for (const chart of result.charts ?? []) expect(await renderSvg(chart.spec)).toMatch(/^<svg[^>]*>[\s\S]*<\/svg>$/);
  return { result, lines };
}

/** The cells of the markdown table row that starts with `first`. */
function row(markdown: string, first: string): string[] {
  const line = markdown.split('\n').find((l) => l.startsWith(`| ${first} |`));
  expect(line, `a table row starting with ${first}`).toBeDefined();
  return line!.split('|').slice(1, -1).map((c) => c.trim());
}

const num = (cell: string) => Number(cell.replace(/[*,x%]/g, ''));

describe('fleet figures (quick)', () => {
  it('ingest-e2e measures both batch sizes, the HINCRBY ceiling and the naive design', async () => {
    const { result } = await runQuick(ingestE2eFigure);
    expect(result.summary).toMatch(/^[\d,]+ events\/s end to end with 1000-event batches, [\d,]+ with 100-event batches .* naive design's [\d,]+ events\/s .* HINCRBY ceiling [\d,]+\/s/);
    for (const batch of ['100', '1000']) {
      const cells = row(result.markdown, batch);
      expect(num(cells[3]!)).toBeGreaterThan(0); // events/s end to end
      expect(num(cells[4]!)).toBeGreaterThan(0); // accepted/s
    }
    expect(result.charts?.map((c) => c.name)).toEqual(['throughput', 'timeline']);
  }, 120_000);

  it('freshness times probes from 202 to visible under load', async () => {
    const { result } = await runQuick(freshnessFigure);
    expect(result.summary).toMatch(/^202 -> visible in the query API: p50 [\d.,]+ ms, p99 [\d.,]+ ms, max [\d.,]+ ms over 15 probes under [\d,]+ events\/s/);
    const cells = row(result.markdown, '15');
    expect(cells.slice(1, 5).map(num).every((v) => Number.isFinite(v) && v > 0)).toBe(true); // p50, p90, p99, max
    expect(result.charts?.map((c) => c.name)).toEqual(['cdf']);
  }, 120_000);

  it('drain counts UpdateItems, items touched and the time to drain after an outage', async () => {
    const { result, lines } = await runQuick(drainFigure);
    expect(result.summary).toMatch(/^after a [\d.]+ s DynamoDB outage under 100 events\/s \(\d+ one-second buckets unwritten\): [\d,]+ UpdateItems for [\d,]+ items touched/);
    const value = (label: string) => num(result.markdown.split('\n').find((l) => l.startsWith(`| ${label}`))!.split('|')[2]!.trim().split(' ')[0]!);
    expect(value('**items touched**')).toBeGreaterThan(0);
    expect(value('**UpdateItems** (ok)')).toBeGreaterThan(0);
    expect(value('**time to drain**')).toBeGreaterThan(0);
    expect(lines).toContain('starting dynalite again');
    expect(result.charts?.map((c) => c.name)).toEqual(['timeline']);
  }, 120_000);
});
