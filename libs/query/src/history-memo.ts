import type { StoredItem } from '@tally/dynamo';

/**
 * Parsed visitor histories kept in process memory by the Redis cache version they were read at, so a warm
 * evaluation neither transfers nor parses the history again. An entry is used only while Redis still reports
 * the same version (the writer bumps it in the step that deletes applied outbox entries), and lives at most
 * the session TTL (well inside the 2-day lifetime of the version key). No entry is kept at version '0' (no
 * version key), which a row of a deleted and re-created store reads again (evaluateSegments).
 */
export class HistoryMemo {
  private readonly entries = new Map<string, { version: string; items: StoredItem[]; until: number }>();
  constructor(private readonly maxEntries = 10_000) {}

  get(key: string, now: number): { version: string; items: StoredItem[] } | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.until < now) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  set(key: string, version: string, items: StoredItem[], until: number): void {
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { version, items, until });
  }
}
