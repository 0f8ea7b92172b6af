import type { StoredItem } from '@tally/dynamo';

/**
 * How much a HistoryMemo keeps, counted in cells (one counter attribute of an item: about 80 bytes of heap, key and
 * value, measured on Node 24; a crawler visitor's history of 80,000 cells is about 6.4 MB).
 */
interface HistoryMemoLimits {
  /** Histories kept at most. Default 10,000. */
  entries: number;
  /** Cells of all the histories kept, at most. Default 1,000,000: about 80 MB. */
  cells: number;
  /**
   * Cells of one history kept, at most: a larger one (a crawler's) is not kept, and each evaluation of its visitor
   * parses it from the Redis cache again. Default 20,000 (about 1.6 MB, 2% of `cells`); an ordinary visitor's
   * history has tens to hundreds.
   */
  cellsPerHistory: number;
}

const DEFAULT_LIMITS: HistoryMemoLimits = { entries: 10_000, cells: 1_000_000, cellsPerHistory: 20_000 };

interface Entry {
  version: string;
  items: StoredItem[];
  until: number;
  cells: number;
}

/**
 * Parsed visitor histories kept in process memory by the Redis cache version they were read at, so a warm
 * evaluation neither transfers nor parses the history again. An entry is used only while Redis still reports
 * the same version (the writer bumps it in the step that deletes applied outbox entries), and lives at most
 * the session TTL (well inside the 2-day lifetime of the version key). No entry is kept at version '0' (no
 * version key), which a row of a deleted and re-created store reads again (evaluateSegments). Bounded by entries
 * and by cells (HistoryMemoLimits), the oldest set going first; every set first drops the expired entries at the
 * front (entries are kept in the order set, so under one session TTL the expired ones are the oldest), so the
 * history of a visitor never asked for again (gone, or erased) goes once its session would have ended.
 */
export class HistoryMemo {
  private readonly entries = new Map<string, Entry>();
  private readonly limits: HistoryMemoLimits;
  private cells = 0;

  constructor(limits: Partial<HistoryMemoLimits> = {}) {
    const l = { ...DEFAULT_LIMITS, ...limits };
    this.limits = { ...l, cellsPerHistory: Math.min(l.cellsPerHistory, l.cells) };
  }

  get(key: string, now: number): { version: string; items: StoredItem[] } | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.until < now) {
      this.drop(key, e);
      return undefined;
    }
    return e;
  }

  /** Keeps `items` for `key` at `version` until `until` (ms), unless the history is larger than cellsPerHistory. */
  set(key: string, version: string, items: StoredItem[], until: number, now: number): void {
    const old = this.entries.get(key);
    if (old) this.drop(key, old);
    const cells = items.reduce((n, it) => n + it.attrs.size, 0);
    for (const [k, e] of this.entries) {
      const full = this.entries.size >= this.limits.entries || this.cells + cells > this.limits.cells;
      if (e.until >= now && (!full || cells > this.limits.cellsPerHistory)) break;
      this.drop(k, e);
    }
    if (cells > this.limits.cellsPerHistory) return;
    this.entries.set(key, { version, items, until, cells });
    this.cells += cells;
  }

  /** Histories and cells kept. */
  get size(): { entries: number; cells: number } {
    return { entries: this.entries.size, cells: this.cells };
  }

  private drop(key: string, e: Entry): void {
    this.entries.delete(key);
    this.cells -= e.cells;
  }
}
