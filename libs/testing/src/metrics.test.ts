import { describe, expect, it } from 'vitest';
import { metricValue } from './metrics';

const text = `# HELP tally_x help
# TYPE tally_x counter
tally_x{app="a",op="UpdateItem",outcome="ok"} 3
tally_x{app="a",op="UpdateItem",outcome="condition_failed"} 2
tally_x_total 9
tally_x{app="b",op="GetItem",outcome="ok"} 1.5`;

describe('metricValue', () => {
  it('sums samples of one metric, filtered by labels', () => {
    expect(metricValue(text, 'tally_x')).toBe(6.5);
    expect(metricValue(text, 'tally_x', { outcome: 'ok' })).toBe(4.5);
    expect(metricValue(text, 'tally_x', { op: 'UpdateItem', outcome: 'ok' })).toBe(3);
    expect(metricValue(text, 'tally_x_total')).toBe(9);
    expect(metricValue(text, 'tally_missing')).toBe(0);
  });
});
