import { describe, expect, it } from 'vitest';
import { collectorIngest } from './collector-ingest';

// The quick variant of the figure (2 s runs): proves the bench works end to end, not how fast it is.
describe('collector-ingest figure (quick)', () => {
  it('measures both batch sizes with no refused request and reports them', async () => {
    const lines: string[] = [];
    const result = await collectorIngest.run({ quick: true, log: (l) => lines.push(l) });
    expect(result.summary).toMatch(
      /^[\d,]+ events\/s with 1000-event batches \(p99 [\d.]+ ms\), [\d,]+ events\/s with 100-event batches; redis-benchmark HSET [\d,]+\/s, HINCRBY [\d,]+\/s \(-P 16\); target 100,000 events\/s (met|NOT met) \[quick run\]$/,
    );
    const rows = result.markdown.split('\n').filter((l) => /^\| 1?00 \|/.test(l) || /^\| 1000 \|/.test(l));
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      const cells = row.split('|').map((c) => c.trim());
      expect(cells[8]).toBe('0 / 0'); // non-2xx / errors
      expect(Number(cells[5]!.replace(/[*,]/g, ''))).toBeGreaterThan(0); // events/s
    }
    expect(lines.some((l) => l.startsWith('measuring 2 s: 1000-event batches'))).toBe(true);
  }, 120_000);
});
