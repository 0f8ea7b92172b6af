import { eventsJobSchema, MAX_EVENTS_PER_JOB, QUEUE_SHARDS, ReplicasBehindError, shardOfStore } from '@tally/queues';
import { compileRules, defaultRules, flattenRows, rollup, rollupDistinct, unflattenDistinct, type NormalizedEvent } from '@tally/schema';
import { describe, expect, it, vi } from 'vitest';
import { IdempotencyConflictError, InvalidArgumentError, QueueUnavailableError, TooManyEventsError, ValidationError } from './errors';
import { createHash } from 'node:crypto';
import { batchFingerprint, createIntake, refusedFingerprint, type IntakeOptions } from './intake';

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

  it('refuses limits out of range when created, naming the limit', () => {
    const make = (limits: object) => () =>
      createIntake({ queues: { events: unusedQueue }, redis: {} as never, rules: compileRules(defaultRules), limits, source: 'client' });
    expect(make({ clockSkewSeconds: 82_800 })).not.toThrow();
    // More than 23 h: an apply that far before its day's start could outlive the margin of the day's ranking.
    expect(make({ clockSkewSeconds: 82_801 })).toThrow(/^limits\.clockSkewSeconds 82801 is invalid: seconds from 0 to 82800/);
    expect(make({ clockSkewSeconds: -1 })).toThrow(InvalidArgumentError);
    expect(make({ maxEvents: 0 })).toThrow(/^limits\.maxEvents 0 is invalid/);
    expect(make({ latenessHorizonDays: Number.NaN })).toThrow(/^limits\.latenessHorizonDays NaN is invalid/);
    // LATENESS_HORIZON_DAYS' bound: erasure unranks a visitor from that many days of top lists, no more.
    expect(make({ latenessHorizonDays: 3_650 })).not.toThrow();
    expect(make({ latenessHorizonDays: 3_651 })).toThrow(
      /^limits\.latenessHorizonDays 3651 is invalid: a number of days above 0, at most 3650 \(as LATENESS_HORIZON_DAYS\)$/,
    );
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

  it('refuses events that are not an array with InvalidArgumentError on `events`, in every entry point, before reading them', async () => {
    const view = { type: 'view', ts: Date.now(), dims: { product: 'P1' } };
    for (const [events, got] of [
      [null, 'null'],
      [undefined, 'undefined'],
      [5, 'number 5'],
      [new Set([view]), 'a Set'],
      [view, 'an object'],
      ['[]', 'string "[]"'],
    ] as const) {
      const input = events as unknown as unknown[];
      for (const call of [
        () => intake.validate(input),
        () => intake.submit('STORE1', input),
        () => intake.enqueue('STORE1', input as never),
        () => intake.enqueueRetry('STORE1', input, { idempotencyKey: 'k1' }),
      ]) {
        const err = await (async () => call())().catch((e: unknown) => e);
        expect(err, got).toBeInstanceOf(InvalidArgumentError);
        expect(err).toMatchObject({ field: 'events', message: `events must be an array of events (got ${got}); nothing was enqueued` });
      }
    }
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
      redis: memoryRedis() as never,
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
      redis: memoryRedis() as never,
      rules: compileRules(defaultRules),
      source: 'client',
    })
      .enqueue('S1', events, { idempotencyKey: 'order-1' })
      .catch((e: unknown) => e)) as QueueUnavailableError;
    expect([keyed.code, keyed.idempotencyKey]).toEqual(['TALLY_ERR_QUEUE_UNAVAILABLE', 'order-1']);
  });
});

describe('createIntake with a replica fence (REDIS_WAIT_REPLICAS)', () => {
  it("fences the jobs' shard once they are added, the store's slot with a key's record, and the first shard when it took one too", async () => {
    const log: string[] = [];
    const shard = (i: number) =>
      Object.assign(capturingQueue([], log), { toKey: (type: string) => `q${i}:${type}` }) as unknown as { toKey(t: string): string };
    const [s0, s1] = [shard(0), shard(1)];
    const fencedOn = (redis: ReturnType<typeof memoryRedis>) =>
      createIntake({
        queues: { events: s0, [QUEUE_SHARDS]: { events: [s0, s1] } } as never,
        redis: redis as never,
        rules: compileRules(defaultRules),
        source: 'client',
        replicaFence: {
          mark: () => (log.push('mark'), 7),
          wait: async (key, what, mark) => void log.push(`fence ${key} (${what}) since ${mark}`),
        },
      });
    // After the upgrade window: the record in the store's slot alone.
    const redis = afterTheWindow();
    const fenced = fencedOn(redis);
    const store = ['S1', 'S2', 'S3', 'S4'].find((s) => shardOfStore(s, 2) === 1)!;
    const events: NormalizedEvent[] = [{ type: 'view', ts: Date.now(), dims: { product: 'P1' } }];
    // A batch without a key is given one, without a record (only a caller's key binds its events): the jobs' shard alone.
    const keyless = await fenced.enqueue(store, events);
    expect(log.splice(0)).toEqual(['mark', 'add', `fence q1:fence (batch ${keyless.batchId}) since 7`]);
    // The first keyed call binds on the first shard too (the marker read with it has not answered yet): fenced as well.
    // One wait on every fence key: on one server one WAIT, on a cluster one per master.
    const { batchId } = await fenced.enqueue(store, events, { idempotencyKey: 'k' });
    expect(log.splice(0)).toEqual(['mark', 'add', `fence q1:fence,t:{${store}}:f,q0:fence (batch ${batchId}) since 7`]);
    // Then the jobs' shard and the store's slot, which holds the record (on a cluster possibly another master).
    await fenced.enqueue(store, events, { idempotencyKey: 'k' });
    expect(log.splice(0)).toEqual(['mark', 'add', `fence q1:fence,t:{${store}}:f (batch ${batchId}) since 7`]);
    expect(redis.values.has(recordOf(store, batchId))).toBe(true);
    // During the upgrade window the record is bound on the first shard by every call: fenced as well.
    const during = fencedOn(memoryRedis());
    for (let i = 0; i < 2; i++) {
      await during.enqueue(store, events, { idempotencyKey: 'k' });
      expect(log.splice(0)).toEqual(['mark', 'add', `fence q1:fence,t:{${store}}:f,q0:fence (batch ${batchId}) since 7`]);
    }
  });

  it('names the idempotency key to retry with in ReplicasBehindError, the one it gave a batch that came without one', async () => {
    const q = Object.assign(capturingQueue([]), { toKey: (type: string) => `q0:${type}` });
    const behind = createIntake({
      queues: { events: q, [QUEUE_SHARDS]: { events: [q] } } as never,
      redis: memoryRedis() as never,
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

/**
 * The intake's Redis commands in memory: SET (EX, NX, GET), GET, DEL and ZMSCORE, each call logged with its arguments.
 * `failed` is the content of the failed sets by key; `gate`, when set, holds SET answers until it is opened; a command
 * on a key `unanswered` picks times out (once it has been sent).
 */
function memoryRedis(failed: Record<string, string[]> = {}) {
  const values = new Map<string, string>();
  const ttls = new Map<string, number>();
  const log: string[] = [];
  let gate: Promise<void> | undefined;
  const timeout = async (key: string) => {
    if (redis.unanswered(key)) throw new Error('Command timed out');
  };
  const redis = {
    status: 'ready',
    once: () => undefined,
    off: () => undefined,
    values,
    ttls,
    log,
    unanswered: (_key: string) => false,
    hold(until: Promise<void>) {
      gate = until;
    },
    async set(key: string, value: string, ...args: Array<string | number>) {
      log.push(`SET ${key} ${args.join(' ')}`);
      if (gate) await gate;
      await timeout(key);
      const earlier = values.get(key) ?? null;
      if (args.includes('NX') ? earlier === null : !args.includes('XX') || earlier !== null) {
        values.set(key, value);
        const ex = args.indexOf('EX');
        if (ex >= 0) ttls.set(key, Number(args[ex + 1]));
      }
      return args.includes('GET') ? earlier : 'OK';
    },
    async get(key: string) {
      log.push(`GET ${key}`);
      await timeout(key);
      return values.get(key) ?? null;
    },
    async del(key: string) {
      log.push(`DEL ${key}`);
      await timeout(key);
      ttls.delete(key);
      return values.delete(key) ? 1 : 0;
    },
    async zmscore(key: string, ...members: string[]) {
      log.push(`ZMSCORE ${key} ${members.join(' ')}`);
      await timeout(key);
      return members.map((m) => (failed[key]?.includes(m) ? '1700000000000' : null));
    },
  };
  return redis;
}

/** The record of `store`'s key that gives `batchId`, in the store's slot (KEY_PREFIX `t`: queues without a layout). */
const recordOf = (store: string, batchId: string) => `t:idem:{${store}}:${batchId}`;
/** Where earlier versions kept it, on the first events shard (`q0` in these tests), and the upgrade window's marker. */
const legacyOf = (batchId: string) => `q0:idem:${batchId}`;
const MARKER = 'q0:idem-legacy-until';
/** A Redis where the upgrade window is over: the marker's time has passed. */
const afterTheWindow = (failed: Record<string, string[]> = {}) => {
  const redis = memoryRedis(failed);
  redis.values.set(MARKER, String(Date.now() - 1));
  return redis;
};
/** The record's lifetime under the default dedupe window, ms: two windows and the slack. */
const lifetimeMs = (2 * 86_400 + 8_640) * 1_000;

/** A queue shard that keeps the jobs added by id, as BullMQ does: an id it holds is answered, not added again. */
function jobQueue(prefix = 'q0') {
  const jobs = new Map<string, { data: { batchId: string; receivedAt: number; events?: NormalizedEvent[]; rows?: unknown[] } }>();
  const calls: string[] = [];
  const addOne = (data: never, jobId: string) => {
    if (!jobs.has(jobId)) jobs.set(jobId, { data });
    return { id: jobId };
  };
  return {
    jobs,
    calls,
    toKey: (type: string) => `${prefix}:${type}`,
    add: async (_name: string, data: never, o: { jobId: string }) => (calls.push('add'), addOne(data, o.jobId)),
    addBulk: async (list: Array<{ data: never; opts: { jobId: string } }>) => (
      calls.push(`addBulk ${list.length}`),
      list.map((j) => addOne(j.data, j.opts.jobId))
    ),
  };
}

const rules = compileRules(defaultRules);
const oneView = (ts = Date.now() - 60_000): NormalizedEvent[] => [{ type: 'view', ts, dims: { product: 'P1' } }];
/** createIntake with the file's rules on test doubles: the events queue (shard) `events` and the connection `redis`. */
const intakeOn = (events: unknown, redis: unknown, opts: Omit<IntakeOptions, 'queues' | 'redis' | 'rules'>) =>
  createIntake({ queues: { events } as never, redis: redis as never, rules, ...opts });

describe('createIntake: receivedAt and timeZone are checked before anything is enqueued', () => {
  it('refuses a receivedAt the aggregator or the schema would refuse (not whole ms, seconds, in the future, older than a tenth of the window)', async () => {
    const q = jobQueue();
    const intake = intakeOn(q, memoryRedis(), { source: 'client', idempotencyWindowSeconds: 3_600 });
    const now = Date.now();
    for (const [receivedAt, why] of [
      [1.5, /is not epoch milliseconds/],
      [now + 0.5, /is not epoch milliseconds/],
      [Number.NaN, /is not epoch milliseconds/],
      ['1700000000000', /is not epoch milliseconds/],
      [Math.floor(now / 1_000), /is more than 360 s ago.*looks like seconds/],
      [now - 2 * 86_400_000, /is more than 360 s ago, a tenth of the dedupe window \(DEDUPE_WINDOW_SECONDS=3600\)/],
      [now - 7 * 60_000, /is more than 360 s ago/],
      [now + 3_600_000, /is more than 300 s in the future/],
    ] as const) {
      const err = await intake.enqueue('S1', oneView(), { receivedAt: receivedAt as number }).catch((e: unknown) => e);
      expect(err, String(receivedAt)).toBeInstanceOf(InvalidArgumentError);
      expect(err).toMatchObject({ code: 'TALLY_ERR_INVALID_ARGUMENT', field: 'receivedAt', message: expect.stringMatching(why) });
    }
    expect(q.calls).toEqual([]);
    // In range: taken as the job's receivedAt.
    for (const receivedAt of [now - 5 * 60_000, now, now + 60_000]) {
      const { batchId } = await intake.enqueue('S1', oneView(), { receivedAt });
      expect(q.jobs.get(batchId)!.data.receivedAt).toBe(receivedAt);
    }
  });

  it('judges receivedAt by the window the aggregators publish, when they do', async () => {
    const redis = memoryRedis();
    redis.values.set('t:dedupe-window', '60000');
    const intake = intakeOn(jobQueue(), redis, { source: 'client', idempotencyWindowSeconds: 3_600, dedupeWindowKey: 't:dedupe-window' });
    // 10 minutes ago: over a tenth of the client's own hour, within a tenth of the aggregators' 60,000 s.
    await expect(intake.enqueue('S1', oneView(), { receivedAt: Date.now() - 600_000 })).resolves.toMatchObject({ accepted: 1 });
  });

  it('refuses a timeZone that is not a zone, whether the rules agree (a RangeError in the rollup) or not (dropped unseen)', async () => {
    const q = jobQueue();
    const redis = memoryRedis();
    const agree = intakeOn(q, redis, { source: 'client' });
    redis.values.set('t:rules', 'other rules');
    const differ = intakeOn(q, redis, { source: 'client', rulesKey: 't:rules' });
    for (const intake of [agree, differ]) {
      for (const timeZone of ['Mars/Olympus', '', 'Europe/Paris '] as const) {
        const err = await intake.enqueue('S1', oneView(), { timeZone }).catch((e: unknown) => e);
        expect(err, timeZone).toBeInstanceOf(InvalidArgumentError);
        expect(err).toMatchObject({ field: 'timeZone', message: expect.stringContaining('is not an IANA time zone name') });
      }
    }
    expect(q.calls).toEqual([]);
    await expect(agree.enqueue('S1', oneView(), { timeZone: 'Asia/Kathmandu' })).resolves.toMatchObject({ accepted: 1 });
  });

  it('takes the zone of a store made before offsets of no whole quarter hours were refused (+05:37), rolled up event by event', async () => {
    const q = jobQueue();
    const intake = intakeOn(q, memoryRedis(), { source: 'http' });
    // 18:22 and 18:23 UTC, one 15-minute slot: 23:59 on 9 March (day 068) and 00:00 on 10 March (069) at +05:37.
    const day = Date.UTC(2026, 2, 9);
    const events = [22, 23].map((m): NormalizedEvent => ({ type: 'view', ts: day + (18 * 60 + m) * 60_000, dims: { product: 'P1' } }));
    const { batchId } = await intake.enqueue('S1', events, { timeZone: '+05:37' });
    const rows = q.jobs.get(batchId)!.data.rows!;
    expect(rows).toEqual(flattenRows(rollup(rules, 'S1', '+05:37', events)));
    expect(rows).toEqual(expect.arrayContaining(['2026-068|v', '2026-069|v']));
  });
});

describe('createIntake: idempotency keys', () => {
  it("keeps the fingerprint of a key two dedupe windows and the records' slack: the aggregators' window, else its own", async () => {
    const redis = memoryRedis();
    const record = (batchId: string) => recordOf('S1', batchId);
    const own = intakeOn(jobQueue(), redis, { source: 'http', idempotencyWindowSeconds: 3_600 });
    const a = await own.enqueue('S1', oneView(), { idempotencyKey: 'k1' });
    expect(redis.ttls.get(record(a.batchId))).toBe(7_200 + 360); // slack: 10% of the window
    const byDefault = intakeOn(jobQueue(), redis, { source: 'http' });
    const b = await byDefault.enqueue('S1', oneView(), { idempotencyKey: 'k2' });
    expect(redis.ttls.get(record(b.batchId))).toBe(2 * 86_400 + 8_640);
    const following = intakeOn(jobQueue(), redis, {
      source: 'client',
      idempotencyWindowSeconds: 3_600,
      dedupeWindowKey: 't:dedupe-window',
    });
    const c = await following.enqueue('S1', oneView(), { idempotencyKey: 'k3' }); // none published: its own
    expect(redis.ttls.get(record(c.batchId))).toBe(7_200 + 360);
    redis.values.set('t:dedupe-window', '604800');
    const later = intakeOn(jobQueue(), redis, { source: 'client', idempotencyWindowSeconds: 3_600, dedupeWindowKey: 't:dedupe-window' });
    const d = await later.enqueue('S1', oneView(), { idempotencyKey: 'k4' });
    expect(redis.ttls.get(record(d.batchId))).toBe(2 * 604_800 + 60_480);
    // The slack is at least 5 minutes.
    const short = intakeOn(jobQueue(), redis, { source: 'http', idempotencyWindowSeconds: 60 });
    const e = await short.enqueue('S1', oneView(), { idempotencyKey: 'k5' });
    expect(redis.ttls.get(record(e.batchId))).toBe(120 + 300);
  });

  it('refuses a fresh key whose job is in the failed set (BullMQ would answer with it, queueing nothing), without binding the key', async () => {
    const q = jobQueue();
    const probe = intakeOn(q, memoryRedis(), { source: 'client' });
    const batchId = probe.batchIdFor('S1', 'order-7');
    const redis = memoryRedis({ 'q0:failed': [batchId, `${probe.batchIdFor('S1', 'big-1')}.1`] });
    const intake = intakeOn(q, redis, { source: 'client' });
    const err = await intake.enqueue('S1', oneView(), { idempotencyKey: 'order-7' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdempotencyConflictError);
    expect(err).toMatchObject({ code: 'TALLY_ERR_IDEMPOTENCY_CONFLICT', idempotencyKey: 'order-7', failedJobId: batchId });
    expect((err as Error).message).toContain(`npm run dlq -- replay events ${batchId}`);
    expect([recordOf('S1', batchId), legacyOf(batchId)].some((key) => redis.values.has(key))).toBe(false);
    // Again: the same answer, not a record left by the first refusal.
    await expect(intake.enqueue('S1', oneView(), { idempotencyKey: 'order-7' })).rejects.toMatchObject({ failedJobId: batchId });
    // A split batch: any part in the failed set.
    const many = Array.from({ length: MAX_EVENTS_PER_JOB + 1 }, () => oneView()[0]!);
    const big = intakeOn(q, redis, { source: 'client', limits: { maxEvents: 10_000 } });
    await expect(big.enqueue('S1', many, { idempotencyKey: 'big-1' })).rejects.toMatchObject({
      failedJobId: `${probe.batchIdFor('S1', 'big-1')}.1`,
    });
    expect(q.calls).toEqual([]);
    // A retry of a batch whose record is there is the same batch, as before (a 2xx for it was an answer already).
    redis.values.set(recordOf('S1', batchId), batchFingerprint(oneView(1)));
    await expect(intake.enqueue('S1', oneView(1), { idempotencyKey: 'order-7' })).resolves.toMatchObject({ batchId });
  });

  it('asks about the failed set in the same round trip as the fingerprint: sent before the SET is answered', async () => {
    const redis = memoryRedis();
    redis.values.set(MARKER, String(Date.now() - 1)); // the upgrade window is over
    let open!: () => void;
    redis.hold(new Promise<void>((resolve) => (open = resolve)));
    const intake = intakeOn(jobQueue(), redis, { source: 'http' });
    const events = oneView();
    const sent = intake.enqueue('S1', events, { idempotencyKey: 'k' });
    await new Promise((resolve) => setImmediate(resolve));
    // The first keyed call reads the marker with its own commands, and binds where earlier versions look too until it
    // has answered: all sent at once.
    const batchId = intake.batchIdFor('S1', 'k');
    const sentBefore = () => redis.log.splice(0).map((l) => l.split(' ').slice(0, 2).join(' '));
    expect(sentBefore()).toEqual([`SET ${MARKER}`, `SET ${recordOf('S1', batchId)}`, `SET ${legacyOf(batchId)}`, 'ZMSCORE q0:failed']);
    open();
    await sent;
    // Once it has: the record's SET and the ZMSCORE alone.
    redis.hold(new Promise<void>((resolve) => (open = resolve)));
    const again = intake.enqueue('S1', events, { idempotencyKey: 'k' });
    await new Promise((resolve) => setImmediate(resolve));
    expect(sentBefore()).toEqual([`SET ${recordOf('S1', batchId)}`, 'ZMSCORE q0:failed']);
    open();
    await again;
  });

  it('binds a key it made up to the events once an error hands it out: a retry under it with other events is refused', async () => {
    const q = jobQueue();
    let fail = false;
    const flaky = {
      ...q,
      add: async (name: string, data: never, o: { jobId: string }) => {
        const job = await q.add(name, data, o); // Redis takes the job, then the answer is lost
        if (fail) throw new Error('Command timed out');
        return job;
      },
    };
    const redis = memoryRedis();
    const intake = intakeOn(flaky, redis, { source: 'http' });
    const events = oneView();
    // A batch that succeeds writes no record: its key is never handed out.
    await intake.enqueue('S1', events);
    expect(redis.log).toEqual([]);
    fail = true;
    const err = (await intake.enqueue('S1', events).catch((e: unknown) => e)) as QueueUnavailableError;
    expect(err.idempotencyKey).toMatch(/^auto-[\w-]{22}$/);
    fail = false;
    const more = [...events, { type: 'view', ts: Date.now() - 1_000, dims: { product: 'P2' } }];
    const other = await intake.enqueue('S1', more, { idempotencyKey: err.idempotencyKey! }).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(IdempotencyConflictError);
    // The same events under it: the same job, counted once.
    const retried = await intake.enqueue('S1', events, { idempotencyKey: err.idempotencyKey! });
    expect(q.jobs.get(retried.batchId)!.data.events).toEqual(events);
    expect(q.jobs.size).toBe(2); // the first batch and this one
  });

  it('completes a split batch that failed part-way when retried under the key the error names, each part once', async () => {
    const q = jobQueue();
    let failPart: number | undefined = 1;
    const partial = {
      ...q,
      // A pipeline: the parts before the failing one are taken, the rest too; the call fails.
      addBulk: async (list: Array<{ data: never; opts: { jobId: string } }>) => {
        const added = await q.addBulk(list.filter((_, i) => i !== failPart));
        if (failPart !== undefined) throw new Error(`NOPERM part ${failPart}`);
        return added;
      },
    };
    const intake = intakeOn(partial, memoryRedis(), { source: 'client', limits: { maxEvents: 3 * MAX_EVENTS_PER_JOB } });
    const events = Array.from({ length: 2 * MAX_EVENTS_PER_JOB + 1 }, (_, i) => ({
      type: 'view',
      ts: Date.now() - 1_000,
      dims: { product: `P${i}` },
    }));
    const err = (await intake.enqueue('S1', events).catch((e: unknown) => e)) as QueueUnavailableError;
    expect(err).toBeInstanceOf(QueueUnavailableError);
    const batchId = intake.batchIdFor('S1', err.idempotencyKey);
    expect([...q.jobs.keys()]).toEqual([`${batchId}.0`, `${batchId}.2`]);
    const first = q.jobs.get(`${batchId}.0`);
    failPart = undefined;
    const done = await intake.enqueue('S1', events, { idempotencyKey: err.idempotencyKey! });
    expect(done.jobIds).toEqual([0, 1, 2].map((i) => `${batchId}.${i}`));
    expect([...q.jobs.keys()].sort()).toEqual(done.jobIds);
    expect(q.jobs.get(`${batchId}.0`)).toBe(first);
  });
});

describe("createIntake: a key's record in its store's slot, and where earlier versions kept it during the upgrade window", () => {
  /** Events shards q0 … q<n-1>: jobQueue doubles. */
  const shardsOf = (n: number) => Array.from({ length: n }, (_, i) => jobQueue(`q${i}`));
  /** createIntake with `shards` as its events shards (QUEUE_SHARDS = their number) on `redis`. */
  const onShards = (shards: Array<ReturnType<typeof jobQueue>>, redis: ReturnType<typeof memoryRedis>) =>
    createIntake({
      queues: { events: shards[0], [QUEUE_SHARDS]: { events: shards } } as never,
      redis: redis as never,
      rules,
      source: 'client',
    });
  const STORES = Array.from({ length: 50 }, (_, i) => `S${i}`);
  const storeOn = (shard: number, of: number) => STORES.find((s) => shardOfStore(s, of) === shard)!;
  /** Each command of `redis.log` as its name and key, the log emptied. */
  const sent = (redis: ReturnType<typeof memoryRedis>) => redis.log.splice(0).map((l) => l.split(' ').slice(0, 2).join(' '));

  it("binds a key in its store's slot, its failed set asked on the store's events shard: after the window nothing else per call", async () => {
    const redis = afterTheWindow();
    const shards = shardsOf(2);
    const intake = onShards(shards, redis);
    const store = storeOn(1, 2);
    const events = oneView();
    const first = await intake.enqueue(store, events, { idempotencyKey: 'k' });
    expect(redis.values.get(recordOf(store, first.batchId))).toMatch(/^[\w-]{43}:\d+:$/);
    expect(redis.ttls.get(recordOf(store, first.batchId))).toBe(lifetimeMs / 1_000);
    expect(shards.map((q) => [...q.jobs.keys()])).toEqual([[], [first.batchId]]);
    // With the marker read (at the first keyed call, then at most once a minute), each keyed call is the record's SET
    // and the failed set's ZMSCORE, sent at once: a retry, and other events.
    redis.log.length = 0;
    await expect(intake.enqueue(store, events, { idempotencyKey: 'k' })).resolves.toEqual(first);
    await expect(intake.enqueue(store, oneView(1), { idempotencyKey: 'k' })).rejects.toBeInstanceOf(IdempotencyConflictError);
    const record = `SET ${recordOf(store, first.batchId)}`;
    expect(sent(redis)).toEqual([record, 'ZMSCORE q1:failed', record, 'ZMSCORE q1:failed']);
    expect(shards[1]!.jobs.size).toBe(1);
  });

  it('finds a record whatever QUEUE_SHARDS the process that bound it runs with, however long either was idle', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'performance'] });
    try {
      const redis = afterTheWindow();
      const shards = shardsOf(3);
      const store = STORES.find((s) => shardOfStore(s, 2) !== shardOfStore(s, 3))!;
      const two = onShards(shards.slice(0, 2), redis);
      await two.enqueue(store, oneView(), { idempotencyKey: 'warm-up' });
      // No keyed call on this process for more than a record lifetime; QUEUE_SHARDS raised to 3 meanwhile.
      vi.advanceTimersByTime(lifetimeMs + 3 * 60_000);
      const three = onShards(shards, redis);
      await three.enqueue(store, oneView(), { idempotencyKey: 'warm-up-3' });
      // A key taken on either is refused for other events on the other.
      const a = await two.enqueue(store, oneView(1), { idempotencyKey: 'order-9' });
      await expect(three.enqueue(store, oneView(2), { idempotencyKey: 'order-9' })).rejects.toBeInstanceOf(IdempotencyConflictError);
      const b = await three.enqueue(store, oneView(1), { idempotencyKey: 'order-10' });
      await expect(two.enqueue(store, oneView(2), { idempotencyKey: 'order-10' })).rejects.toBeInstanceOf(IdempotencyConflictError);
      // The same events are the same batch on either, queued on the store's shard of the process that takes them.
      await expect(three.enqueue(store, oneView(1), { idempotencyKey: 'order-9' })).resolves.toEqual(a);
      expect([a.batchId, b.batchId].map((id) => redis.values.has(recordOf(store, id)))).toEqual([true, true]);
      expect(shards[shardOfStore(store, 2)]!.jobs.has(a.batchId)).toBe(true);
      expect(shards[shardOfStore(store, 3)]!.jobs.has(b.batchId)).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });

  it('honours a record an earlier version kept on the first shard during the window, which the first process opens for two lifetimes', async () => {
    // The first process of this version: no marker yet.
    const redis = memoryRedis();
    const shards = shardsOf(2);
    const intake = onShards(shards, redis);
    const store = storeOn(1, 2);
    const batchId = intake.batchIdFor(store, 'order-1');
    const t0 = Date.now() - 120_000;
    const legacy = `${batchFingerprint(oneView(t0))}:${t0}:`;
    redis.values.set(legacyOf(batchId), legacy);
    const before = Date.now();
    const err = await intake.enqueue(store, oneView(), { idempotencyKey: 'order-1' }).catch((e: unknown) => e);
    const after = Date.now();
    expect(err).toBeInstanceOf(IdempotencyConflictError);
    expect(err).toMatchObject({ code: 'TALLY_ERR_IDEMPOTENCY_CONFLICT', idempotencyKey: 'order-1', failedJobId: undefined });
    // Nothing queued, and the record the call made in the store's slot is gone: the key stays bound to the earlier events.
    expect(shards.map((q) => q.jobs.size)).toEqual([0, 0]);
    expect(redis.values.has(recordOf(store, batchId))).toBe(false);
    expect(redis.values.get(legacyOf(batchId))).toBe(legacy);
    // The window: two record lifetimes from the first call, one for the deploy to replace the earlier versions, one
    // for their last record.
    expect(Number(redis.values.get(MARKER))).toBeGreaterThanOrEqual(before + 2 * lifetimeMs);
    expect(Number(redis.values.get(MARKER))).toBeLessThanOrEqual(after + 2 * lifetimeMs);
    // The earlier events again: the batch the earlier version took (its retry), not a conflict; and a retry read finds it.
    await expect(intake.enqueue(store, oneView(t0), { idempotencyKey: 'order-1' })).resolves.toMatchObject({ batchId });
    redis.values.delete(recordOf(store, batchId));
    const retried = await intake.enqueueRetry(store, [{ type: 'view', ts: t0, dims: { product: 'P1' } }], { idempotencyKey: 'order-1' });
    expect(retried?.enqueued.batchId).toBe(batchId);
    expect(shards.map((q) => q.jobs.size)).toEqual([0, 1]);
    // Meanwhile a key is bound on the first shard too, where an earlier version still running (or rolled back to) looks.
    const next = await intake.enqueue(store, oneView(), { idempotencyKey: 'order-2' });
    expect([recordOf(store, next.batchId), legacyOf(next.batchId)].every((k) => redis.values.has(k))).toBe(true);
    // A process started later in the window keeps it as it is.
    const marker = redis.values.get(MARKER);
    const later = await onShards(shards, redis).enqueue(store, oneView(), { idempotencyKey: 'order-3' });
    expect(redis.values.get(MARKER)).toBe(marker);
    expect(redis.values.has(legacyOf(later.batchId))).toBe(true);
  });

  it('never takes a marker Redis did not answer for a window over: a key reused for other events is refused, or 503 without the first shard', async () => {
    const redis = memoryRedis();
    const shards = shardsOf(2);
    const store = storeOn(1, 2);
    const intake = onShards(shards, redis);
    const batchId = intake.batchIdFor(store, 'order-1');
    const t0 = Date.now() - 120_000;
    // An earlier version took order-1 with other events.
    redis.values.set(legacyOf(batchId), `${batchFingerprint(oneView(t0))}:${t0}:`);
    // The marker's first read times out; the call, and its retry at once, still look on the first shard.
    let markerTimeouts = 1;
    redis.unanswered = (key) => key === MARKER && markerTimeouts-- > 0;
    for (let i = 0; i < 2; i++)
      await expect(intake.enqueue(store, oneView(), { idempotencyKey: 'order-1' }), `call ${i}`).rejects.toBeInstanceOf(
        IdempotencyConflictError,
      );
    // The first shard down (the marker and the legacy record unanswered): 503 each time, a retry read too; never taken.
    const starting = onShards(shards, redis);
    redis.unanswered = (key) => key.startsWith('q0:');
    for (let i = 0; i < 2; i++) {
      const err = await starting.enqueue(store, oneView(), { idempotencyKey: 'order-1' }).catch((e: unknown) => e);
      expect(err, `call ${i}`).toBeInstanceOf(QueueUnavailableError);
      expect(err).toMatchObject({
        idempotencyKey: 'order-1',
        message: expect.stringMatching(/^Redis did not take the batch: Command timed out/),
      });
    }
    const input = [{ type: 'view', ts: Date.now() - 60_000, dims: { product: 'P1' } }];
    await expect(starting.enqueueRetry(store, input, { idempotencyKey: 'order-1' })).rejects.toBeInstanceOf(QueueUnavailableError);
    expect(shards.map((q) => q.jobs.size)).toEqual([0, 0]);
    // Back: refused as a conflict.
    redis.unanswered = () => false;
    await expect(starting.enqueue(store, oneView(), { idempotencyKey: 'order-1' })).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect(shards.map((q) => q.jobs.size)).toEqual([0, 0]);
  });

  it('after the window needs nothing of the first shard; reads the marker once a minute, and a deleted one opens a new window', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'performance'] });
    try {
      const redis = afterTheWindow();
      const shards = shardsOf(2);
      const intake = onShards(shards, redis);
      const store = storeOn(1, 2);
      await intake.enqueue(store, oneView(), { idempotencyKey: 'k1' });
      // The first shard down: a keyed call of a store on another shard sends it nothing.
      redis.unanswered = (key) => key.startsWith('q0:');
      redis.log.length = 0;
      const k2 = await intake.enqueue(store, oneView(), { idempotencyKey: 'k2' });
      expect(sent(redis)).toEqual([`SET ${recordOf(store, k2.batchId)}`, 'ZMSCORE q1:failed']);
      // A minute on the marker is read again, not waited for: unanswered, what it said last serves.
      vi.advanceTimersByTime(60_000);
      const k3 = await intake.enqueue(store, oneView(), { idempotencyKey: 'k3' });
      expect(sent(redis)).toEqual([`SET ${MARKER}`, `SET ${recordOf(store, k3.batchId)}`, 'ZMSCORE q1:failed']);
      // Rolled back, then upgraded again: the marker deleted. Read within a minute of the last read, the call after that
      // opens a new window, and the calls then bind on the first shard too.
      redis.unanswered = () => false;
      redis.values.delete(MARKER);
      await intake.enqueue(store, oneView(), { idempotencyKey: 'k4' });
      expect(sent(redis).filter((c) => c.includes('q0:'))).toEqual([]);
      vi.advanceTimersByTime(60_000);
      const readAt = Date.now();
      await intake.enqueue(store, oneView(), { idempotencyKey: 'k5' });
      await vi.waitFor(() => expect(redis.values.get(MARKER)).toBe(String(readAt + 2 * lifetimeMs)));
      const k6 = await intake.enqueue(store, oneView(), { idempotencyKey: 'k6' });
      expect(redis.values.has(legacyOf(k6.batchId))).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('createIntake: a keyed retry is validated at the time of the first attempt', () => {
  const horizonMs = 2_000;
  const limits = { latenessHorizonDays: horizonMs / 86_400_000 };

  it('keeps the time the events were validated at with the fingerprint, and validates a retry (enqueueRetry) at it', async () => {
    const q = jobQueue();
    const redis = memoryRedis();
    const intake = intakeOn(q, redis, { source: 'http' });
    const t0 = Date.now();
    const input = [
      { type: 'view', ts: t0 + 330_000, dims: { product: 'PX' } }, // more than the clock skew ahead: refused at t0
      { type: 'view', ts: t0 - 60_000, dims: { product: 'PY' } },
    ];
    const record = recordOf('S1', intake.batchIdFor('S1', 'k'));
    expect(await intake.enqueueRetry('S1', input, { idempotencyKey: 'k', now: t0, partial: true })).toBeUndefined();
    // The record's GET, and before the marker has answered (read with it) the legacy record's.
    expect(redis.log).toEqual([`SET ${MARKER} NX GET`, `GET ${record}`, `GET ${legacyOf(intake.batchIdFor('S1', 'k'))}`]);
    const valid = intake.validate(input, t0);
    const bind = { idempotencyKey: 'k', validatedAt: t0, input: { items: input, acceptedIndexes: valid.acceptedIndexes } };
    const first = await intake.enqueue('S1', valid.events, bind);
    // The record: the accepted events' fingerprint, the time, and what identifies the refused ones (PX at index 0).
    const refused = refusedFingerprint(input, [1]);
    expect(refused).toMatch(/^[\w-]{43}$/);
    expect(redis.values.get(record)).toBe(`${batchFingerprint(valid.events)}:${t0}:${refused}`);
    // The same input again at once (PX still too far ahead): the same batch.
    await expect(intake.enqueue('S1', valid.events, bind)).resolves.toEqual(first);
    // A minute later PX is within the skew: at that time the batch would be another one; at t0 it is the first.
    const later = t0 + 60_000;
    expect(intake.validate(input, later).errors).toEqual([]);
    await expect(intake.enqueue('S1', intake.validate(input, later).events, { idempotencyKey: 'k' })).rejects.toBeInstanceOf(
      IdempotencyConflictError,
    );
    const retried = await intake.enqueueRetry('S1', input, { idempotencyKey: 'k', now: later, partial: true });
    expect(retried).toEqual({ enqueued: first, validation: valid });
    // All or nothing: the first attempt took every event, which this one (PX refused at t0) does not.
    expect(await intake.enqueueRetry('S1', input, { idempotencyKey: 'k', now: later })).toBeUndefined();
    // Other events: nothing, whatever the time.
    expect(await intake.enqueueRetry('S1', [input[1], input[1]], { idempotencyKey: 'k', now: later, partial: true })).toBeUndefined();
    expect(q.jobs.size).toBe(1);
  });

  it('takes for a retry only the same input: other events refused at the time of the record are other events', async () => {
    const q = jobQueue();
    const redis = memoryRedis();
    const intake = intakeOn(q, redis, { source: 'http' });
    const t0 = Date.now();
    const PX = { type: 'view', ts: t0 + 330_000, dims: { product: 'PX' } }; // beyond the clock skew at t0
    const PY = { type: 'view', ts: t0 - 60_000, dims: { product: 'PY' } };
    const bindAt = (items: unknown[], at: number) => {
      const v = intake.validate(items, at);
      return [v.events, { idempotencyKey: 'k', validatedAt: at, input: { items, acceptedIndexes: v.acceptedIndexes } }] as const;
    };
    // The first request (partial): PY accepted, PX refused; the key is bound to [PY] and PX at index 0.
    const first = await intake.enqueue('S1', ...bindAt([PX, PY], t0));
    // At once, [PY, PZ] with PZ too far ahead as PX was: the same accepted events, another refused one.
    const PZ = { type: 'view', ts: t0 + 331_000, dims: { product: 'PZ' } };
    await expect(intake.enqueue('S1', ...bindAt([PY, PZ], t0 + 1))).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect(await intake.enqueueRetry('S1', [PY, PZ], { idempotencyKey: 'k', now: t0 + 1, partial: true })).toBeUndefined();
    // PX at another index, or spelt otherwise (a member more): other input too.
    for (const items of [
      [PY, PX],
      [{ ...PX, note: 1 }, PY],
    ]) {
      await expect(intake.enqueue('S1', ...bindAt(items, t0 + 1))).rejects.toBeInstanceOf(IdempotencyConflictError);
      expect(await intake.enqueueRetry('S1', items, { idempotencyKey: 'k', now: t0 + 1, partial: true })).toBeUndefined();
    }
    // A minute later PZ is within the skew: [PY, PZ] is no retry either (at t0 it is [PY] and PZ refused, not PX).
    const later = t0 + 60_000;
    expect(intake.validate([PY, PZ], later).errors).toEqual([]);
    await expect(intake.enqueue('S1', ...bindAt([PY, PZ], later))).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect(await intake.enqueueRetry('S1', [PY, PZ], { idempotencyKey: 'k', now: later, partial: true })).toBeUndefined();
    // The first request again, its members in another order: a retry, answered as the first.
    const again = [{ dims: { product: 'PX' }, ts: PX.ts, type: 'view' }, PY];
    await expect(intake.enqueue('S1', ...bindAt(again, t0 + 1))).resolves.toEqual(first);
    expect(await intake.enqueueRetry('S1', again, { idempotencyKey: 'k', now: later, partial: true })).toMatchObject({ enqueued: first });
    expect(q.jobs.size).toBe(1);
  });

  it('takes a record of the version before (`<fingerprint>:<ms>`, nothing of the refused events) by its fingerprint', async () => {
    const q = jobQueue();
    const redis = memoryRedis();
    const intake = intakeOn(q, redis, { source: 'http' });
    const t0 = Date.now() - 60_000;
    const input = [{ type: 'view', ts: t0 + 330_000, dims: { product: 'PX' } }, ...oneView(t0 - 1_000)];
    const v = intake.validate(input, t0);
    const batchId = intake.batchIdFor('S1', 'k');
    redis.values.set(`q0:idem:${batchId}`, `${batchFingerprint(v.events)}:${t0}`);
    const bind = { idempotencyKey: 'k', input: { items: input, acceptedIndexes: v.acceptedIndexes } };
    await expect(intake.enqueue('S1', v.events, bind)).resolves.toMatchObject({ batchId, accepted: 1 });
    const retried = await intake.enqueueRetry('S1', input, { idempotencyKey: 'k', partial: true });
    expect(retried).toMatchObject({ enqueued: { batchId, accepted: 1 }, validation: { acceptedIndexes: [1] } });
    expect(q.jobs.size).toBe(1);
  });

  it('takes a record of an earlier version (the fingerprint alone): an enqueue of its events, a retry without the horizon', async () => {
    const q = jobQueue();
    const redis = memoryRedis();
    const intake = intakeOn(q, redis, { source: 'client', limits });
    const input = [{ type: 'view', ts: Date.now() - horizonMs - 1_000, dims: { product: 'P1' } }];
    const relaxed = intake.validate(input, Date.now(), { lateness: false }).events;
    redis.values.set(`q0:idem:${intake.batchIdFor('S1', 'old')}`, batchFingerprint(relaxed));
    const retried = await intake.submit('S1', input, { idempotencyKey: 'old' });
    expect(retried.batchId).toBe(intake.batchIdFor('S1', 'old'));
    await expect(intake.enqueue('S1', relaxed, { idempotencyKey: 'old' })).resolves.toEqual(retried);
    expect(q.jobs.size).toBe(1);
  });

  it('binds the same batch whatever the spelling of its values (0.1, "0.10", "1e-1")', async () => {
    const q = jobQueue();
    const intake = intakeOn(q, memoryRedis(), { source: 'client' });
    const ts = Date.now() - 60_000;
    const order = (value: number | string) => [{ type: 'order', ts, value, dims: { visitor: 'V1' } }];
    const first = await intake.submit('S1', order(0.1), { idempotencyKey: 'spelt' });
    for (const value of ['0.10', '1e-1', 0.1])
      await expect(intake.submit('S1', order(value), { idempotencyKey: 'spelt' })).resolves.toEqual(first);
    await expect(intake.submit('S1', order('0.11'), { idempotencyKey: 'spelt' })).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect(q.jobs.size).toBe(1);
  });

  it('submit answers a retry of a call accepted in time with its batch, not a ValidationError; a call never accepted still gets one', async () => {
    const q = jobQueue();
    const intake = intakeOn(q, memoryRedis(), { source: 'client', limits });
    const input = [{ type: 'view', ts: Date.now() - horizonMs + 500, dims: { product: 'P1' } }];
    const first = await intake.submit('S1', input, { idempotencyKey: 'late-1' });
    await new Promise((resolve) => setTimeout(resolve, 700));
    // Its answer was lost; the retry comes once the event has passed the horizon.
    await expect(intake.submit('S1', input, { idempotencyKey: 'late-1' })).resolves.toEqual(first);
    expect(q.jobs.size).toBe(1);
    // Without a key, or under a key never used, or with other events: refused as before.
    await expect(intake.submit('S1', input)).rejects.toBeInstanceOf(ValidationError);
    await expect(intake.submit('S1', input, { idempotencyKey: 'late-2' })).rejects.toBeInstanceOf(ValidationError);
    const other = [...input, { type: 'view', ts: Date.now(), dims: { product: 'P2' } }];
    await expect(intake.submit('S1', other, { idempotencyKey: 'late-1' })).rejects.toBeInstanceOf(ValidationError);
    expect(q.jobs.size).toBe(1);
  });
});
