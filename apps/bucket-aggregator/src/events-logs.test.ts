import type { BucketStore } from '@tally/buckets';
import { compileRules, defaultRules } from '@tally/schema';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { eventsProcessor, type EventsProcessorDeps } from './events.processor';

describe('events jobs during an outage or a refused backlog', () => {
  it('log one line per kind and window, the next one carrying how many were not logged; every one is counted', async () => {
    let t = 5_000_000;
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const metrics = createAggregatorMetrics(new Registry());
    /** The processor, on the test's clock and log, with as much of a BucketStore as it uses. */
    const processor = (buckets: object, timeZoneOf: EventsProcessorDeps['timeZoneOf']) =>
      eventsProcessor({
        buckets: buckets as BucketStore,
        rules: compileRules(defaultRules),
        timeZoneOf,
        dedupeTtlSeconds: 86_400,
        metrics,
        log,
        now: () => t,
      });
    // The tenant directory is unreachable for store Z; every other store is unknown (no tenant).
    const run = processor({ storeDeleted: async () => false }, async (store) => {
      if (store === 'Z') throw new Error('DynamoDB unreachable');
      return undefined;
    });
    let delayed = 0;
    const job = (id: string, store: string, receivedAt = t) =>
      ({
        id,
        timestamp: receivedAt,
        attemptsStarted: 1,
        data: { batchId: `b-${id}`, store, events: [{ type: 'view', ts: t, dims: { product: 'P1' } }], receivedAt, source: 'http' },
        moveToDelayed: async () => void delayed++,
      }) as unknown as Job;

    // One window (10 s, the processor's clock): 300 batches wait for the time zone, 200 are refused for having no
    // tenant, 100 for being past the dedupe window.
    for (let i = 0; i < 300; i++) await expect(run(job(`z${i}`, 'Z'))).rejects.toBeInstanceOf(DelayedError);
    for (let i = 0; i < 200; i++) await expect(run(job(`u${i}`, 'U'))).rejects.toBeInstanceOf(UnrecoverableError);
    for (let i = 0; i < 100; i++) await expect(run(job(`o${i}`, 'U', t - 90_000_000))).rejects.toBeInstanceOf(UnrecoverableError);
    expect(delayed).toBe(300);
    expect(lines.map((l) => [l['msg'], l['jobId']])).toEqual([
      ['time zone unknown for now; batch waits', 'z0'],
      ['batch for a store with no tenant refused; it goes to the failed set', 'u0'],
      ['batch past the dedupe window refused; it goes to the failed set', 'o0'],
    ]);

    // The next window's first line of a kind says how many of that kind the last window dropped.
    t += 10_000;
    await expect(run(job('z-next', 'Z'))).rejects.toBeInstanceOf(DelayedError);
    expect(lines[3]).toMatchObject({ msg: 'time zone unknown for now; batch waits', jobId: 'z-next', suppressed: 299 });

    // Duplicates (every retry after a wait for replicas finds its batch applied) are throttled alike.
    const dup = processor(
      {
        storeDeleted: async () => false,
        apply: async () => ({ applied: false, deleted: false, seq: 0 }),
        registerStore: async () => undefined,
        sketches: { add: async () => undefined },
      },
      async () => 'UTC',
    );
    const before = lines.length;
    for (let i = 0; i < 50; i++) await dup(job(`d${i}`, 'D'));
    expect(lines.slice(before).map((l) => [l['msg'], l['jobId']])).toEqual([['duplicate batch skipped', 'd0']]);
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(50);

    const rejected = Object.fromEntries((await metrics.batchesRejected.get()).values.map((v) => [v.labels['reason'], v.value]));
    expect(rejected).toMatchObject({ unknown_store: 200, dedupe_window: 100 });
  });
});

describe('events jobs while the store’s Redis is unavailable', () => {
  const reply = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });
  /** The errors a store's Redis answers while it cannot serve (its slot mid-migration, its master loading or full). */
  const unavailable = [
    new Error('Too many Cluster redirections. Last error: ReplyError: TRYAGAIN Multiple keys request during rehashing of slot'),
    new Error('Too many Cluster redirections. Last error: ReplyError: ASK 1234 127.0.0.1:7001'),
    reply('LOADING Redis is loading the dataset in memory'),
    reply('CLUSTERDOWN The cluster is down'),
    reply("OOM command not allowed when used memory > 'maxmemory'."),
  ];

  /** A processor on a fake BucketStore whose calls fail as `fail` says (by call name and how many before it), on the test's clock. */
  function setup(fail: (call: string, n: number) => Error | undefined) {
    const t = 5_000_000;
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const metrics = createAggregatorMetrics(new Registry());
    const calls: string[] = [];
    let applied = false;
    const call = async <T>(name: string, result: () => T): Promise<T> => {
      const err = fail(name, calls.filter((c) => c === name).length);
      calls.push(name);
      if (err) throw err;
      return result();
    };
    const buckets = {
      storeDeleted: () => call('storeDeleted', () => false),
      // The store's batch is applied once: its retries are duplicates (the dedupe record).
      apply: () =>
        call('apply', () => {
          const first = !applied;
          applied = true;
          return { applied: first, seq: first ? 7 : 0 };
        }),
      registerStore: () => call('registerStore', () => undefined),
      sketches: { add: () => call('sketches.add', () => undefined) },
    };
    const run = eventsProcessor({
      buckets: buckets as unknown as BucketStore,
      rules: compileRules(defaultRules),
      timeZoneOf: async () => 'UTC',
      dedupeTtlSeconds: 86_400,
      metrics,
      log,
      now: () => t,
    });
    /** When each wait of the job ends (the time it was delayed to). */
    const delays: number[] = [];
    /** The batch's try number `attempt` (its attemptsStarted), accepted `ageMs` before the clock. */
    const job = (attempt: number, ageMs = 0) =>
      ({
        id: 'j1',
        timestamp: t - ageMs,
        attemptsStarted: attempt,
        attemptsMade: 0,
        data: {
          batchId: 'b1',
          store: 'S',
          events: [{ type: 'view', ts: t, dims: { product: 'P1', visitor: 'v1' } }],
          receivedAt: t - ageMs,
          source: 'http',
        },
        moveToDelayed: async (at: number) => void delays.push(at),
      }) as unknown as Job;
    const waits = async () => (await metrics.batchWaits.get()).values.map((v) => [v.labels['reason'], v.value]);
    return { run, job, calls, lines, metrics, delays, waits };
  }

  it.each(unavailable)('%s: the batch waits without spending an attempt, and its retry applies it once', async (err) => {
    // The apply is refused twice (nothing written), then applied.
    const s = setup((call, n) => (call === 'apply' && n < 2 ? err : undefined));
    // The waits' backoff, as for the replicas: 250-500 ms after the first try, twice that after the second.
    for (const [attempt, least] of [
      [1, 250],
      [2, 500],
    ] as const) {
      const before = Date.now();
      await expect(s.run(s.job(attempt))).rejects.toBeInstanceOf(DelayedError);
      expect(s.delays[attempt - 1]).toBeGreaterThanOrEqual(before + least);
      expect(s.delays[attempt - 1]).toBeLessThanOrEqual(Date.now() + 2 * least);
    }
    expect(s.calls).toEqual(['apply', 'apply']);
    expect(await s.waits()).toEqual([['redis', 2]]);
    // One warning for the window, naming the error.
    expect(s.lines.map((l) => [l['level'], l['msg'], l['err']])).toEqual([[40, 'Redis not available now; batch waits', err.message]]);

    expect(await s.run(s.job(3))).toEqual({ applied: true, seq: 7, events: 1 });
    expect(s.calls).toEqual(['apply', 'apply', 'apply', 'registerStore', 'sketches.add']);
    expect((await s.metrics.batchesApplied.get()).values[0]!.value).toBe(1);
  });

  it.each([
    ['registerStore', 'the apply done, its work-set registration not'],
    ['sketches.add', 'the apply and the registration done, the distinct members not'],
  ])('%s failing (%s): the batch waits, and its retry (a duplicate) registers and adds the members', async (failing) => {
    const s = setup((call, n) => (call === failing && n === 0 ? unavailable[0] : undefined));
    await expect(s.run(s.job(1))).rejects.toBeInstanceOf(DelayedError);
    expect(await s.waits()).toEqual([['redis', 1]]);
    expect(await s.run(s.job(2))).toEqual({ applied: false, seq: 0, events: 1 });
    const [first, second] = [s.calls.slice(0, s.calls.indexOf(failing) + 1), s.calls.slice(s.calls.indexOf(failing) + 1)];
    expect(first).toEqual(failing === 'registerStore' ? ['apply', 'registerStore'] : ['apply', 'registerStore', 'sketches.add']);
    expect(second).toEqual(['apply', 'registerStore', 'sketches.add']);
    // Counted once as applied (at its apply), its retry as a duplicate.
    expect((await s.metrics.batchesApplied.get()).values[0]!.value).toBe(1);
    expect((await s.metrics.duplicateBatches.get()).values[0]!.value).toBe(1);
  });

  it('spends an attempt on any other error', async () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'length')");
    const s = setup((call) => (call === 'registerStore' ? bug : undefined));
    await expect(s.run(s.job(1))).rejects.toBe(bug);
    expect(s.delays).toEqual([]);
    expect(await s.waits()).toEqual([]);
  });

  it('waits no longer than the dedupe window: a retry past it is refused to the failed set', async () => {
    const s = setup(() => undefined);
    await expect(s.run(s.job(40, 86_400_000))).rejects.toThrow(/past the dedupe window .* it was started before/);
    // Nothing applied; only the store registered in the work set, for what an earlier try may have applied.
    expect(s.calls).toEqual(['registerStore']);
    // A first try past the window (queued that long) writes nothing.
    const first = setup(() => undefined);
    await expect(first.run(first.job(1, 86_400_000))).rejects.toThrow(/past the dedupe window .* not applied \(nothing written\)/);
    expect(first.calls).toEqual([]);
  });

  it('a batch applied whose registration waited past the dedupe window: its store is registered before the refusal', async () => {
    // The work-set shard's Redis unavailable from the first try's registration until the window has passed.
    let outage = true;
    const s = setup((call) => (call === 'registerStore' && outage ? unavailable[0] : undefined));
    await expect(s.run(s.job(1))).rejects.toBeInstanceOf(DelayedError);
    await expect(s.run(s.job(2, 86_399_000))).rejects.toBeInstanceOf(DelayedError);
    expect(s.calls).toEqual(['apply', 'registerStore', 'apply', 'registerStore']);
    // Still unavailable past the window: the job waits (no attempt spent) rather than leave the applied counts out of
    // the work set; nothing is applied again.
    await expect(s.run(s.job(3, 86_400_000))).rejects.toBeInstanceOf(DelayedError);
    expect(s.calls.slice(4)).toEqual(['registerStore']);
    // Back: the next try registers the store (the sealer then seals the counts in its open bucket), and refuses the batch.
    outage = false;
    const refused = await s.run(s.job(4, 86_430_000)).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UnrecoverableError);
    expect((refused as Error).message).toMatch(/past the dedupe window .* not applied again; the store registered in the work set/);
    expect(s.calls.slice(5)).toEqual(['registerStore']);
    expect((await s.metrics.batchesApplied.get()).values[0]!.value).toBe(1);
    const rejected = (await s.metrics.batchesRejected.get()).values.map((v) => [v.labels['reason'], v.value]);
    expect(rejected).toEqual([['dedupe_window', 1]]);
  });
});
