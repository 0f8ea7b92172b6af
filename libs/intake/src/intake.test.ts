import { eventsJobSchema, MAX_EVENTS_PER_JOB, QUEUE_SHARDS, ReplicasBehindError, shardOfStore } from '@tally/queues';
import { compileRules, defaultRules, rollupDistinct, unflattenDistinct, type NormalizedEvent } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, QueueUnavailableError, TooManyEventsError, ValidationError } from './errors';
import { createHash } from 'node:crypto';
import { batchFingerprint, createIntake } from './intake';

// Only validation and ids here: nothing reaches the queue (enqueue is covered against a real Redis by the
// collector's and the client's integration tests).
const unusedQueue = {
  add: () => {
    throw new Error('must not be called');
  },
  addBulk: () => {
    throw new Error('must not be called');
  },
} as never;

/** A queue that keeps the data of every job added, by `add` (one job) or `addBulk` (a split batch). */
function capturingQueue<D>(added: D[], calls: string[] = []) {
  return {
    add: async (_name: string, data: D, opts: { jobId: string }) => (calls.push('add'), added.push(data), { id: opts.jobId }),
    addBulk: async (jobs: Array<{ data: D; opts: { jobId: string } }>) => (
      calls.push(`addBulk ${jobs.length}`),
      jobs.map((j) => (added.push(j.data), { id: j.opts.jobId }))
    ),
  } as never;
}
const intake = createIntake({
  queues: { events: unusedQueue },
  redis: { status: 'ready', once: () => undefined, off: () => undefined } as never,
  rules: compileRules(defaultRules),
  limits: { maxEvents: 2 },
  source: 'client',
});

describe('createIntake', () => {
  it('normalises valid events and names each bad one by index, field and reason', () => {
    const now = Date.now();
    const result = intake.validate(
      [
        { type: 'order', ts: now - 1_000, value: 19.99 },
        { type: 'view', ts: 'yesterday-ish' },
      ],
      now,
    );
    expect(result.events).toEqual([{ type: 'order', ts: now - 1_000, dims: {}, value: '19.99' }]);
    expect(result.errors.map((e) => [e.index, e.field])).toEqual([
      [1, 'ts'],
      [1, 'dims.product'],
    ]);
  });

  it('refuses more events than the limit, before looking at any', () => {
    expect(() => intake.validate([{}, {}, {}])).toThrow(TooManyEventsError);
  });

  it('submit is all or nothing: one invalid event rejects the call and enqueues nothing', async () => {
    await expect(
      intake.submit('STORE1', [
        { type: 'view', ts: Date.now() },
        { type: 'nope', ts: Date.now() },
      ]),
    ).rejects.toThrow(ValidationError);
  });

  it('derives the batch id from store and idempotency key, and refuses a bad store id or key', async () => {
    expect(intake.batchIdFor('STORE1', 'order-1')).toBe(intake.batchIdFor('STORE1', 'order-1'));
    expect(intake.batchIdFor('STORE1', 'order-1')).not.toBe(intake.batchIdFor('STORE2', 'order-1'));
    expect(() => intake.batchIdFor('STORE1', 'has space')).toThrow(InvalidArgumentError);
    await expect(intake.enqueue('bad store!', [])).rejects.toThrow(InvalidArgumentError);
  });

  it('refuses a batch with no events, as the collector does, before making a batch id or reaching Redis', async () => {
    for (const call of [() => intake.enqueue('STORE1', []), () => intake.submit('STORE1', [], { idempotencyKey: 'k1' })]) {
      await expect(call()).rejects.toMatchObject({
        code: 'TALLY_ERR_INVALID_ARGUMENT',
        field: 'events',
        message: 'events must hold at least 1 event (got none); nothing was enqueued',
      });
    }
  });

  it('rolls a batch up with its distinct members when the zone is known: rows and distinct (base64 ids), none without visitors', async () => {
    const added: unknown[] = [];
    const capturing = createIntake({
      queues: { events: capturingQueue(added) },
      redis: { status: 'ready', once: () => undefined, off: () => undefined } as never,
      rules: compileRules(defaultRules),
      source: 'http',
    });
    const ts = Date.parse('2026-03-09T12:00:00Z');
    const events = [
      { type: 'view', ts, dims: { product: 'P1', visitor: 'V1' } },
      { type: 'view', ts, dims: { product: 'P1', visitor: 'V2' } },
      { type: 'view', ts, dims: { product: 'P2', visitor: 'V1' } },
    ];
    await capturing.enqueue('S1', events, { timeZone: 'Asia/Kathmandu' });
    await capturing.enqueue('S1', [{ type: 'view', ts, dims: { product: 'P1' } }], { timeZone: 'Asia/Kathmandu' });
    await capturing.enqueue('S1', events);
    const [rolled, noVisitor, plain] = added.map((d) => eventsJobSchema.parse(d));
    expect(rolled!.rows).toBeDefined();
    expect(rolled!.distinct!.slice(0, 3)).toEqual(['S1', 1, '2026-068|uv']);
    expect(unflattenDistinct(rolled!.distinct!)).toEqual(rollupDistinct(compileRules(defaultRules), 'S1', 'Asia/Kathmandu', events));
    expect(noVisitor!.rows).toBeDefined();
    expect(noVisitor).not.toHaveProperty('distinct');
    expect(plain).not.toHaveProperty('distinct');
    expect(plain!.events).toHaveLength(3);
  });

  it('submit enqueues the events as they were at the call, whatever the caller changes after', async () => {
    const added: Array<{ events: NormalizedEvent[] }> = [];
    const capturing = createIntake({
      queues: { events: capturingQueue(added) },
      redis: { status: 'ready', once: () => undefined, off: () => undefined } as never,
      rules: compileRules(defaultRules),
      source: 'client',
    });
    const event = { type: 'view', ts: Date.now(), dims: { product: 'P1' } };
    const sent = capturing.submit('S1', [event]);
    event.dims.product = 'P 2 is not an id';
    await sent;
    expect(added[0]!.events[0]!.dims).toEqual({ product: 'P1' });
  });

  it('adds a batch of one job with `add` and a split batch with one `addBulk`, part i as <batchId>.<i>', async () => {
    const added: Array<{ batchId: string; events?: NormalizedEvent[] }> = [];
    const calls: string[] = [];
    const capturing = createIntake({
      queues: { events: capturingQueue(added, calls) },
      redis: { status: 'ready', once: () => undefined, off: () => undefined } as never,
      rules: compileRules(defaultRules),
      limits: { maxEvents: 2 * MAX_EVENTS_PER_JOB + 1 },
      source: 'client',
    });
    const ts = Date.now();
    const view = (i: number): NormalizedEvent => ({ type: 'view', ts, dims: { product: `P${i}` } });
    const one = await capturing.enqueue('S1', [view(0), view(1)]);
    expect(calls).toEqual(['add']);
    expect(one.jobIds).toEqual([one.batchId]);
    const split = await capturing.enqueue(
      'S1',
      Array.from({ length: MAX_EVENTS_PER_JOB + 1 }, (_, i) => view(i)),
    );
    expect(calls).toEqual(['add', 'addBulk 2']);
    expect(split.jobIds).toEqual([`${split.batchId}.0`, `${split.batchId}.1`]);
    expect(added.map((d) => [d.batchId, d.events?.length])).toEqual([
      [one.batchId, 2],
      [`${split.batchId}.0`, MAX_EVENTS_PER_JOB],
      [`${split.batchId}.1`, 1],
    ]);
  });
});

describe('createIntake when Redis may or may not have taken the batch', () => {
  it('names the idempotency key to retry with in QueueUnavailableError, one it gave a keyless batch too; the retry is the same batch', async () => {
    const taken: string[] = [];
    let fail = true;
    const flaky = createIntake({
      queues: {
        events: {
          // Redis takes the job, then the answer is lost (a command timeout, a dropped connection).
          add: async (_name: string, _data: unknown, o: { jobId: string }) => {
            if (!taken.includes(o.jobId)) taken.push(o.jobId);
            if (fail) throw new Error('Command timed out');
            return { id: o.jobId };
          },
          toKey: (type: string) => `q0:${type}`,
        },
      } as never,
      redis: { status: 'ready', once: () => undefined, off: () => undefined, set: async () => null } as never,
      rules: compileRules(defaultRules),
      source: 'client',
    });
    const events: NormalizedEvent[] = [{ type: 'view', ts: Date.now(), dims: { product: 'P1' } }];
    const err = (await flaky.enqueue('S1', events).catch((e: unknown) => e)) as QueueUnavailableError;
    expect(err).toBeInstanceOf(QueueUnavailableError);
    expect(err.idempotencyKey).toMatch(/^auto-[\w-]{22}$/);
    fail = false;
    const retried = await flaky.enqueue('S1', events, { idempotencyKey: err.idempotencyKey! });
    // One job: the retry's id is the first try's, so BullMQ (or, once the job is gone, the aggregator's dedupe) counts it once.
    expect(taken).toEqual([retried.batchId]);
    const keyed = (await createIntake({
      queues: { events: { add: async () => Promise.reject(new Error('Connection is closed.')), toKey: (t: string) => `q0:${t}` } } as never,
      redis: { status: 'ready', once: () => undefined, off: () => undefined, set: async () => null } as never,
      rules: compileRules(defaultRules),
      source: 'client',
    })
      .enqueue('S1', events, { idempotencyKey: 'order-1' })
      .catch((e: unknown) => e)) as QueueUnavailableError;
    expect([keyed.code, keyed.idempotencyKey]).toEqual(['TALLY_ERR_QUEUE_UNAVAILABLE', 'order-1']);
  });
});

describe('createIntake with a replica fence (REDIS_WAIT_REPLICAS)', () => {
  it("fences the jobs' shard once they are added, and the first shard too when it took the idempotency record", async () => {
    const log: string[] = [];
    const shard = (i: number) =>
      Object.assign(capturingQueue([], log), { toKey: (type: string) => `q${i}:${type}` }) as unknown as { toKey(t: string): string };
    const [s0, s1] = [shard(0), shard(1)];
    const fenced = createIntake({
      queues: { events: s0, [QUEUE_SHARDS]: { events: [s0, s1] } } as never,
      redis: {
        status: 'ready',
        once: () => undefined,
        off: () => undefined,
        set: async () => (log.push('idempotency record'), null),
      } as never,
      rules: compileRules(defaultRules),
      source: 'client',
      replicaFence: {
        mark: () => (log.push('mark'), 7),
        wait: async (key, what, mark) => void log.push(`fence ${key} (${what}) since ${mark}`),
      },
    });
    const store = ['S1', 'S2', 'S3', 'S4'].find((s) => shardOfStore(s, 2) === 1)!;
    const events: NormalizedEvent[] = [{ type: 'view', ts: Date.now(), dims: { product: 'P1' } }];
    // A batch without a key is given one, without a record (only a caller's key binds its events): the jobs' shard alone.
    const keyless = await fenced.enqueue(store, events);
    expect(log.splice(0)).toEqual(['mark', 'add', `fence q1:fence (batch ${keyless.batchId}) since 7`]);
    const { batchId } = await fenced.enqueue(store, events, { idempotencyKey: 'k' });
    expect(log.splice(0)).toEqual([
      'mark',
      'idempotency record',
      'add',
      `fence q1:fence (batch ${batchId}) since 7`,
      `fence q0:fence (batch ${batchId}) since 7`,
    ]);
  });

  it('names the idempotency key to retry with in ReplicasBehindError, the one it gave a batch that came without one', async () => {
    const q = Object.assign(capturingQueue([]), { toKey: (type: string) => `q0:${type}` });
    const behind = createIntake({
      queues: { events: q, [QUEUE_SHARDS]: { events: [q] } } as never,
      redis: { status: 'ready', once: () => undefined, off: () => undefined, set: async () => null } as never,
      rules: compileRules(defaultRules),
      source: 'client',
      replicaFence: {
        mark: () => 0,
        wait: async (_key, what) => {
          throw new ReplicasBehindError(`0 of 1 Redis replicas acknowledged ${what} within 5 ms`);
        },
      },
    });
    const events: NormalizedEvent[] = [{ type: 'view', ts: Date.now(), dims: { product: 'P1' } }];
    const keyed = (await behind.enqueue('S1', events, { idempotencyKey: 'k' }).catch((e: unknown) => e)) as ReplicasBehindError;
    expect([keyed, keyed.idempotencyKey]).toEqual([expect.any(ReplicasBehindError), 'k']);
    const keyless = (await behind.enqueue('S1', events).catch((e: unknown) => e)) as ReplicasBehindError;
    expect(keyless.idempotencyKey).toMatch(/^auto-[\w-]{22}$/);
    // The batch id a retry under that key gets is the one the error names.
    expect(keyless.message).toContain(`batch ${behind.batchIdFor('S1', keyless.idempotencyKey)} `);
  });
});

describe('batchFingerprint', () => {
  // The digest as it was first defined: fingerprints stored in Redis by an earlier collector keep matching a retry.
  const reference = (events: readonly NormalizedEvent[]) => {
    let text = '';
    for (const e of events) {
      const keys = Object.keys(e.dims).sort();
      text += `${JSON.stringify([e.type, e.ts, e.id ?? null, keys.map((k) => [k, e.dims[k]]), e.value ?? null])}\n`;
    }
    return createHash('sha256').update(text).digest('base64url');
  };

  it('is the SHA-256 of each event as JSON, dims sorted, whatever characters the strings hold', () => {
    const events: NormalizedEvent[] = [
      { type: 'view', ts: 1_700_000_000_123, dims: { visitor: 'V1', product: 'P1' } },
      { type: 'order', ts: 0, id: 'O-1', dims: {}, value: '19.99' },
      { type: 'we"ird\\type\u0001', ts: -5, dims: { 'a\u2028': 'b\ud83d\ude00', z: '\ud800' }, value: '1e3' },
    ];
    expect(batchFingerprint(events)).toBe(reference(events));
    expect(batchFingerprint([])).toBe(reference([]));
    expect(batchFingerprint(events.slice(0, 1))).not.toBe(batchFingerprint(events.slice(1, 2)));
  });
});
