import { QueueFullError } from '@tally/intake';
import { shardOfStore } from '@tally/queues';
import { HttpProblem } from '@tally/http';
import type { Logger } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createBackpressure } from './backpressure';

/** Fake events shards with fixed waiting counts; `reads` counts the reads of each. */
function shards(waiting: number[]) {
  const reads = waiting.map(() => 0);
  const queues = waiting.map((n, i) => ({
    getWaitingCount: async () => {
      reads[i]!++;
      return n;
    },
  }));
  return { queues, reads };
}

/** A store id whose events shard (of `count`) is `shard`, as the enqueue maps it. */
const storeOn = (shard: number, count: number) =>
  Array.from({ length: 100 }, (_, i) => `STORE${i}`).find((s) => shardOfStore(s, count) === shard)!;

const ready = { status: 'ready' };

describe('createBackpressure', () => {
  it("refuses a store only for its own shard's depth: a backlog in another shard does not refuse it", async () => {
    const { queues, reads } = shards([0, 6]);
    const bp = createBackpressure({ shards: queues, redis: ready, maxDepth: 5 });
    await bp.sample();
    expect(reads).toEqual([1, 1]); // one read per shard per poll, none per request
    expect(bp.depth).toBe(6);
    const quiet = storeOn(0, 2);
    const noisy = storeOn(1, 2);
    expect(() => bp.admit(quiet)).not.toThrow();
    let err: unknown;
    try {
      bp.admit(noisy);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(QueueFullError);
    expect(err).toMatchObject({ depth: 6, limit: 5 });
    expect(reads).toEqual([1, 1]);
  });

  it('with one shard, refuses every store while the queue is over the limit', async () => {
    const { queues } = shards([6]);
    const bp = createBackpressure({ shards: queues, redis: ready, maxDepth: 5 });
    await bp.sample();
    for (const store of ['A', 'B', 'SHOP1']) expect(() => bp.admit(store)).toThrow(QueueFullError);
    const under = createBackpressure({ shards: shards([5]).queues, redis: ready, maxDepth: 5 });
    await under.sample();
    expect(() => under.admit('A')).not.toThrow();
  });
  /** The status of admit(store): 'ok', 429 or 503. */
  const outcome = (bp: ReturnType<typeof createBackpressure>, store: string) => {
    try {
      bp.admit(store);
      return 'ok';
    } catch (err) {
      if (err instanceof QueueFullError) return 429;
      if (err instanceof HttpProblem) return err.statusCode;
      throw err;
    }
  };

  afterEach(() => vi.useRealTimers());

  it("a shard whose read fails (a Cluster master down) refuses only its own stores with 503, not the other shards'", async () => {
    let down = true;
    const queues = [
      { getWaitingCount: async () => 0 },
      {
        getWaitingCount: async () => {
          if (down) throw new Error('connect ECONNREFUSED');
          return 0;
        },
      },
    ];
    const bp = createBackpressure({ shards: queues, redis: ready, maxDepth: 5 });
    await bp.sample();
    const [up, off] = [storeOn(0, 2), storeOn(1, 2)];
    expect(outcome(bp, up)).toBe('ok');
    expect(outcome(bp, off)).toBe(503);
    expect(bp.redisUp).toBe(true); // /readyz: the collector still takes the other shards' stores
    expect(bp.depth).toBeUndefined();
    down = false;
    await bp.sample();
    expect(outcome(bp, off)).toBe('ok');
    expect(bp.depth).toBe(0);
  });

  it("a shard whose read hangs holds back no other shard's reads: only its stores are refused once its read is stale", async () => {
    vi.useFakeTimers();
    const queues = [{ getWaitingCount: async () => 0 }, { getWaitingCount: () => new Promise<number>(() => undefined) }];
    const bp = createBackpressure({ shards: queues, redis: ready, maxDepth: 5, intervalMs: 100, staleAfterMs: 1_000 });
    bp.start();
    await vi.advanceTimersByTimeAsync(1_500);
    const [up, hung] = [storeOn(0, 2), storeOn(1, 2)];
    expect(outcome(bp, up)).toBe('ok');
    expect(outcome(bp, hung)).toBe(503);
    expect(bp.redisUp).toBe(true);
    bp.stop();
  });

  /** A logger that keeps the backpressure's lines as [level, shards, error message, message]. */
  function capturedLog() {
    const lines: unknown[][] = [];
    const at = (level: string) => (obj: { shards?: number[]; err?: { message: string } }, msg: string) =>
      lines.push([level, obj.shards, obj.err?.message, msg]);
    return { log: { warn: at('warn'), info: at('info') } as unknown as Logger, lines };
  }
  const CANNOT_READ = "cannot read the events queue shards' depth; refusing their stores' events with 503";

  it('logs an outage of a single Redis (every shard on its one connection) as one line naming the shards, its end as one', async () => {
    let down = false;
    const connection = {
      getWaitingCount: async () => {
        if (down) throw new Error("Stream isn't writeable and enableOfflineQueue options is false");
        return 1;
      },
    };
    const { log, lines } = capturedLog();
    const bp = createBackpressure({ shards: [connection, connection, connection, connection], redis: ready, maxDepth: 5, log });
    await bp.sample();
    down = true;
    await bp.sample();
    await bp.sample();
    down = false;
    await bp.sample();
    await bp.sample();
    expect(lines).toEqual([
      ['warn', [0, 1, 2, 3], "Stream isn't writeable and enableOfflineQueue options is false", CANNOT_READ],
      ['info', [0, 1, 2, 3], undefined, 'events queue shards readable again'],
    ]);
  });

  it('on a Redis Cluster, names the shards of a master down in one line per cause: a second cause in its own line', async () => {
    // Six shards over three masters, as their hash tags fall on a 3-master cluster; A and C fail in the same poll.
    const masterOf = ['A', 'B', 'C', 'A', 'A', 'B'];
    const down = new Map<string, string>();
    const queues = masterOf.map((master) => ({
      getWaitingCount: async () => {
        const error = down.get(master);
        if (error) throw new Error(error);
        return 0;
      },
    }));
    const { log, lines } = capturedLog();
    const bp = createBackpressure({ shards: queues, redis: ready, maxDepth: 5, log });
    await bp.sample();
    down.set('A', 'Too many Cluster redirections. Last error: Error: Connection is closed.');
    down.set('C', 'Command timed out');
    await bp.sample();
    await bp.sample();
    expect(bp.redisUp).toBe(true);
    down.delete('A');
    await bp.sample();
    expect(lines).toEqual([
      ['warn', [0, 3, 4], 'Too many Cluster redirections. Last error: Error: Connection is closed.', CANNOT_READ],
      ['warn', [2], 'Command timed out', CANNOT_READ],
      ['info', [0, 3, 4], undefined, 'events queue shards readable again'],
    ]);
  });

  it('refuses every store with 503 when every shard is unreadable, and /readyz says so', async () => {
    const failing = { getWaitingCount: async () => Promise.reject(new Error('down')) };
    const bp = createBackpressure({ shards: [failing, failing], redis: ready, maxDepth: 5 });
    await bp.sample();
    expect([outcome(bp, storeOn(0, 2)), outcome(bp, storeOn(1, 2))]).toEqual([503, 503]);
    expect(bp.redisUp).toBe(false);
  });
});
