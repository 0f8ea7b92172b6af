import { describe, expect, it } from 'vitest';
import { aggregatorFigure } from './aggregator-apply';

// The quick variant of the figure (60 jobs of 1000 events a run): proves that one aggregator drains each kind of job
// it is given, the collector's rolled-up ones included, and that the figure reports it; not how fast (no thresholds).
describe('aggregator-apply figure (quick)', () => {
  it("drains jobs of events and the collector's rolled-up jobs, with the CPU of the aggregator and Redis for each", async () => {
    const result = await aggregatorFigure.run({ quick: true, log: () => {} });
    expect(result.summary).toMatch(
      /^[\d,]+ events\/s applied by one aggregator process \(60 batches x 1000\), [\d,]+ with 100-event batches, [\d,]+ from jobs the collector rolled up; .* target >= 100,000 events\/s (met|NOT met) \[quick run\]$/,
    );
    const runs = result.markdown.split('\n').filter((l) => /^\| (60|600) batches of /.test(l));
    expect(runs.map((l) => l.split('|')[1]!.trim().split(' (')[0])).toEqual([
      '60 batches of 1000 events',
      '600 batches of 100 events',
      '60 batches of 1000 rolled up by the collector',
    ]);
    for (const line of runs) {
      const [eventsPerSecond, aggregator, redis] = line
        .split('|')
        .slice(2, 5)
        .map((c) => c.trim());
      expect(Number(eventsPerSecond!.replace(/,/g, ''))).toBeGreaterThan(0);
      for (const cpu of [aggregator, redis]) expect(cpu).toMatch(/^\d+\.\d\d \(\d+\.\d ms\)$/);
    }
  }, 180_000);
});
