import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BucketStore } from '@tally/buckets';
import { closeQueues, createQueues, enqueue, QUEUE, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { appArgs, metricValue, REPO_ROOT, startProcess, waitFor, waitForQueuesIdle } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';

const stack = useStack({ tenants: ['S'] });
const queueSets = new Map<string, TallyQueues>();
stack.defer(() => Promise.all([...queueSets.values()].map((q) => closeQueues(q))));
/** The queues of the installation with KEY_PREFIX `prefix`. */
const queuesOf = (prefix: string) => {
  let q = queueSets.get(prefix);
  if (!q) queueSets.set(prefix, (q = createQueues(stack.redis, { keyPrefix: prefix, shards: 1 })));
  return q;
};
const rules = compileRules(defaultRules);

const env = (prefix: string, extra: Record<string, string> = {}) => ({
  ...stack.env,
  BUCKET_SECONDS: '1',
  JOB_LOCK_MS: '1500',
  KEY_PREFIX: prefix,
  ...extra,
});

async function totalOf(buckets: BucketStore, store: string, pk: string): Promise<bigint> {
  const [row] = await buckets.snapshot(store, [pk]);
  return row!.entries.filter((e) => e.metric === 'v').reduce((s, e) => s + e.value, 0n);
}

const batch = (batchId: string, store: string, n: number) => ({
  batchId,
  store,
  receivedAt: Date.now(),
  events: Array.from({ length: n }, (_, i) => ({ type: 'view', ts: Date.now(), dims: { product: `P${i % 4}` } })),
});

describe('bucket aggregator processes', () => {
  it('refuses to start with bad rollup rules, naming the rule', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tally-badrules-'));
    const file = join(dir, 'rules.json');
    const rules = structuredClone(defaultRules) as any;
    rules.events.view.counters[1].entity = 'shop';
    writeFileSync(file, JSON.stringify(rules));
    const p = await startProcess(process.execPath, appArgs('bucket-aggregator', 'bundle'), {
      cwd: REPO_ROOT,
      env: env('bad', { RULES_FILE: file }),
    });
    expect((await p.exited).code).toBe(1);
    expect(p.output()).toContain('tally: rollup rules: events.view.counters.1: unknown entity "shop"');
  });

  it('SIGKILLed between the apply and the job completion, then restarted: counted once', async () => {
    const buckets = new BucketStore({ redis: stack.redis, rules, prefix: 'ka' });
    const queues = queuesOf('ka');
    const agg = await stack.startApp('bucket-aggregator', {
      env: env('ka', { TALLY_CRASH_POINT: 'aggregator:after-apply', SEALER_ENABLED: 'false' }),
    });
    await enqueue(queues, QUEUE.events, batch('crash-1', 'S', 10));
    const exit = await agg.process.exited;
    expect(exit.signal).toBe('SIGKILL');
    expect(await totalOf(buckets, 'S', 'S')).toBe(10n); // applied before the crash
    await agg.restart({ TALLY_CRASH_POINT: undefined });
    // The stalled job is retried by the restarted process; the batch id makes the retry a no-op.
    await waitFor(async () => metricValue(await agg.metrics(), 'tally_batches_duplicate_total') === 1, {
      timeoutMs: 20_000,
      message: 'stalled job retried',
    });
    expect(await queues[QUEUE.events].count()).toBe(0);
    expect(await totalOf(buckets, 'S', 'S')).toBe(10n);
    expect(await queues[QUEUE.events].getFailedCount()).toBe(0);
    await agg.stop();
  });

  it('two aggregator processes seal and fold every bucket exactly once, in order', async () => {
    const queues = queuesOf('two');
    const buckets = new BucketStore({ redis: stack.redis, rules, prefix: 'two' });
    const a = await stack.startApp('bucket-aggregator', { env: env('two'), name: 'aggregator#1' });
    const b = await stack.startApp('bucket-aggregator', { env: env('two'), name: 'aggregator#2' });
    // Watch the folded-through marker and the sealed list while batches flow for ~4 buckets.
    const folded: number[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const f = await stack.redis.get('two:{S}:folded');
        if (f !== null && folded[folded.length - 1] !== Number(f)) folded.push(Number(f));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    let sent = 0;
    for (let i = 0; i < 40; i++) {
      await enqueue(queues, QUEUE.events, batch(`two-${i}`, 'S', 25));
      sent += 25;
      await new Promise((r) => setTimeout(r, 100));
    }
    await waitForQueuesIdle([queues[QUEUE.events]], { timeoutMs: 20_000 });
    // Wait until every bucket is sealed and folded (the open one seals after a bucket length).
    await waitFor(async () => (await stack.redis.keys('two:{S}:r:*')).length === 0 && (await stack.redis.llen('two:{S}:sealed')) === 0, {
      timeoutMs: 20_000,
      message: 'all buckets folded',
    });
    watching = false;
    await watcher;
    const last = Number(await stack.redis.get('two:{S}:folded'));
    if (folded[folded.length - 1] !== last) folded.push(last); // the watcher polls every 20 ms: take the final value
    expect(await totalOf(buckets, 'S', 'S')).toBe(BigInt(sent));
    // Every product row holds exactly its share, whatever replica folded which bucket.
    // 25 events per batch over P0..P3: 7, 6, 6, 6 per batch.
    for (let p = 0; p < 4; p++) expect(await totalOf(buckets, 'S', `S#product#P${p}`)).toBe(BigInt(40 * (p === 0 ? 7 : 6)));
    expect(folded.length).toBeGreaterThan(2);
    expect([...folded].sort((x, y) => x - y)).toEqual(folded); // foldedThrough only moves forward
    // Each outbox entry's bucket seq is one the sealer folded; no bucket data is left outside the outbox.
    expect(await stack.redis.keys('two:{S}:b:*')).toEqual([]);
    const seqs = new Set((await buckets.readOutbox('S', 'S')).entries.map((e) => e.seq));
    expect(Math.max(...seqs)).toBeLessThanOrEqual(folded[folded.length - 1]!);
    await Promise.all([a.stop(), b.stop()]);
    expect(a.process.exit?.code).toBe(0);
    expect(b.process.exit?.code).toBe(0);
  });
});
