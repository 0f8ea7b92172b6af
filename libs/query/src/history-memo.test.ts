import type { StoredItem } from '@tally/dynamo';
import { describe, expect, it } from 'vitest';
import { HistoryMemo } from './history-memo';

/** A visitor's history of `cells` counters in one month item (a crawler's: tens of thousands). */
const history = (cells: number): StoredItem[] => [
  { sk: 'M2023-05', wm: 1, attrs: new Map(Array.from({ length: cells }, (_, i) => [`D140.pv#P${i}`, 1n])) },
];
const key = (v: number) => `S\u0000S#visitor#V${v}`;
const kept = (memo: HistoryMemo, n: number, now: number) => Array.from({ length: n }, (_, v) => memo.get(key(v), now) !== undefined);

describe('HistoryMemo', () => {
  it('keeps a history for its version until its session ends', () => {
    const memo = new HistoryMemo();
    const items = history(3);
    memo.set(key(1), '17', items, 2_000, 1_000);
    expect(memo.get(key(1), 2_000)).toMatchObject({ version: '17', items });
    expect(memo.get(key(1), 2_001)).toBeUndefined();
    expect(memo.size).toEqual({ entries: 0, cells: 0 });
  });

  it('lets go of histories whose session ended at the next set, though never asked for again', () => {
    const memo = new HistoryMemo();
    for (let v = 0; v < 5; v++) memo.set(key(v), '17', history(1_000), 1_000 + v, v);
    expect(memo.size).toEqual({ entries: 5, cells: 5_000 });
    memo.set(key(9), '17', history(10), 60_003, 1_003); // the first three sessions have ended (until < now)
    expect(memo.size).toEqual({ entries: 3, cells: 2_010 });
    expect(kept(memo, 5, 1_003)).toEqual([false, false, false, true, true]);
  });

  it('keeps no history larger than cellsPerHistory (a crawler visitor), and drops the one it held for the key', () => {
    const memo = new HistoryMemo();
    memo.set(key(0), '17', history(10), 60_000, 0);
    memo.set(key(0), '18', history(80_000), 60_000, 0);
    expect(memo.get(key(0), 0)).toBeUndefined();
    expect(memo.size).toEqual({ entries: 0, cells: 0 });
    const small = new HistoryMemo({ cellsPerHistory: 100 });
    small.set(key(1), '17', history(101), 60_000, 0);
    small.set(key(2), '17', history(100), 60_000, 0);
    expect(small.size).toEqual({ entries: 1, cells: 100 });
  });

  it('holds at most `cells` cells and `entries` histories, evicting the oldest set first', () => {
    const memo = new HistoryMemo({ cells: 1_000, entries: 4 });
    for (let v = 0; v < 4; v++) memo.set(key(v), '17', history(300), 60_000, 0);
    expect(memo.size).toEqual({ entries: 3, cells: 900 });
    expect(kept(memo, 4, 0)).toEqual([false, true, true, true]);
    for (let v = 4; v < 10; v++) memo.set(key(v), '17', history(1), 60_000, 0);
    expect(memo.size).toEqual({ entries: 4, cells: 4 });
    expect(kept(memo, 10, 0)).toEqual([false, false, false, false, false, false, true, true, true, true]);
    // A history set again (a new version) moves to the back.
    memo.set(key(6), '18', history(1), 60_000, 0);
    memo.set(key(10), '17', history(997), 60_000, 0);
    expect(memo.size).toEqual({ entries: 4, cells: 1_000 });
    expect(kept(memo, 11, 0)).toEqual([false, false, false, false, false, false, true, false, true, true, true]);
    expect(memo.get(key(6), 0)?.version).toBe('18');
  });
});
