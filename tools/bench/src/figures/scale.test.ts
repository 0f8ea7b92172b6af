import { describe, expect, it } from 'vitest';
import { memoryPer } from './scale';

const point = (stores: number, openRows: number, memory: number) => ({ stores, openRows, memory });

describe("memoryPer (the scale figure's Redis bytes per store and per open row)", () => {
  it('takes the difference of two points with more stores, then of two with more open rows', () => {
    // 1 MB of constant part, 1,000 B per store, 200 B per open row.
    const mem = (stores: number, rows: number) => 1e6 + 1000 * stores + 200 * rows;
    const grid = [point(10, 10_000, mem(10, 10_000)), point(1000, 100_000, mem(1000, 100_000))];
    grid.push(point(10_000, 10_000, mem(10_000, 10_000)), point(10_000, 1_000_000, mem(10_000, 1_000_000)));
    expect(memoryPer(grid)).toEqual({ perStore: 1000, perRow: 200 });
  });

  it('has no figure for a grid of one size (TALLY_SCALE_POINTS=10000x1000000,10000x1000000,10000x1000000), not Infinity', () => {
    const same = point(10_000, 1_000_000, 2.4e8);
    expect(memoryPer([same, { ...same, memory: 2.5e8 }, same])).toBeUndefined();
    expect(memoryPer([point(10, 1000, 1e6), point(300, 1000, 2e6)])).toBeUndefined();
    expect(memoryPer([])).toBeUndefined();
  });
});
