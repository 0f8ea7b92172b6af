import { createIntake, type Intake } from '@tally/intake';
import { createLogger } from '@tally/observability';
import { loadRules, type NormalizedEvent } from '@tally/schema';
import type { TenantDirectory } from '@tally/tenants';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type CollectorApp } from './app';
import type { Backpressure } from './backpressure';
import { inexactNumber, mayHoldInexactNumber, parseJsonArray, parseNdjson } from './body';
import { createCollectorMetrics, type CollectorMetrics } from './metrics';

// JSON numbers are doubles: past 15 significant digits (or out of a double's range) JSON.parse rounds them silently.
// The docs promise exact values, so such a number in `value` or `ts` is refused, naming the event and the field.

const ts = 1773569700000;
const order = (value: string) => `{"type":"order","ts":${ts},"dims":{"visitor":"V42"},"value":${value}}`;

describe('JSON numbers that do not read exactly', () => {
  it('refuses them in value, naming the event, and tells the sender to send a decimal string', () => {
    const body = parseJsonArray(`[${order('19.99')},${order('19.999999999999999')},${order('1000000000000.00001')}]`, 10);
    expect(body.items[0]).toMatchObject({ value: 19.99 });
    expect(body.items.slice(1)).toEqual([undefined, undefined]);
    expect(body.lineErrors.map((e) => [e.index, e.field])).toEqual([
      [1, 'value'],
      [2, 'value'],
    ]);
    expect(body.lineErrors[0]!.reason).toBe(
      'has 17 significant digits, more than the 15 a JSON number holds exactly: 19.999999999999999 would be read as 20; send it as a decimal string: "19.999999999999999"',
    );
    expect(body.lineErrors[1]!.reason).toMatch(
      /1000000000000\.00001 would be read as 1000000000000\b.*decimal string: "1000000000000\.00001"/,
    );
  });

  it('takes a number of 16 or 17 digits that prints back the same: what is counted is what was sent', () => {
    // 19.99 + 15 in floating point: validation then refuses its decimals (has more than 2 decimal places).
    const text = `[${order('34.989999999999995')},${order('0.30000000000000004')}]`;
    expect(parseJsonArray(text, 10)).toEqual({ items: JSON.parse(text), lineErrors: [] });
  });

  it('refuses a number out of the range a double holds exactly (1e-400 reads as 0), and an inexact ts', () => {
    const body = parseJsonArray(
      `[${order('1e-400')}, {"type":"view","ts": 1773569700000.0000001,"dims":{"product":"P1"}}, {"type":"view","ts":1773569700000,"dims":{"product":"P1"}}]`,
      10,
    );
    expect(body.items.slice(0, 2)).toEqual([undefined, undefined]);
    expect(body.items[2]).toMatchObject({ ts });
    expect(body.lineErrors).toEqual([
      {
        index: 0,
        field: 'value',
        reason: 'is beyond the range a JSON number holds exactly: 1e-400 would be read as 0; send it as a decimal string: "1e-400"',
      },
      {
        index: 1,
        field: 'ts',
        reason: expect.stringMatching(
          /: 1773569700000\.0000001 would be read as 1773569700000; ts takes epoch milliseconds as a whole number/,
        ),
      },
    ]);
  });

  it('refuses a mantissa of 16 or more digits with a negative exponent; leaves whole numbers to validation', () => {
    const body = parseJsonArray(
      `[${order('19999999999999999E-15')},${order('-1.99999999999999999E-5')},${order('12345678901234567890')},${order('19999999999999999e-15')}]`,
      10,
    );
    expect(body.lineErrors.map((e) => [e.index, e.field])).toEqual([
      [0, 'value'],
      [1, 'value'],
      [3, 'value'],
    ]);
    expect(body.lineErrors[0]!.reason).toMatch(/19999999999999999E-15 would be read as 20;/);
    // A hand-written lower-case exponent, no `.`, read as a whole number: found by the pre-scan too.
    expect(body.lineErrors[2]!.reason).toMatch(/19999999999999999e-15 would be read as 20;/);
    // 1e15 or more: validation refuses it as over the maximum (a ts: in the future), which says more.
    expect(body.items[2]).toMatchObject({ value: 12345678901234567000 });
  });

  it('the pre-scan finds exactly the numbers the slow parse refuses (random numbers, in random places)', () => {
    let seed = 42;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const digits = (n: number) => Array.from({ length: n }, (_, i) => (i === 0 ? 1 + rand(9) : rand(10))).join('');
    let refused = 0;
    for (let i = 0; i < 20_000; i++) {
      const whole = rand(4) === 0 ? '0' : digits(1 + rand(18));
      const frac = rand(3) === 0 ? '' : `.${rand(2) ? digits(1 + rand(18)) : '0'.repeat(rand(8)) + digits(1 + rand(10))}`;
      const exp = rand(3) === 0 ? `${rand(2) ? 'e' : 'E'}${['', '+', '-'][rand(3)]}${rand(2) ? rand(30) : rand(500)}` : '';
      const source = `${rand(5) === 0 ? '-' : ''}${whole}${frac}${exp}`;
      const text = `[{"type":"order", "dims":{"visitor":"V${rand(1e6)}"},${rand(2) ? `"ts": ${ts}, "value":  ${source}` : `"value":${source},"ts":\n${ts}`}}]`;
      const brute = inexactNumber('value', source, JSON.parse(source) as number);
      if (brute !== undefined) refused++;
      expect(mayHoldInexactNumber(text, JSON.parse(text) as unknown[]), source).toBe(brute !== undefined);
      expect(
        parseJsonArray(text, 10).lineErrors.map((e) => e.reason),
        source,
      ).toEqual(brute === undefined ? [] : [brute]);
    }
    expect(refused).toBeGreaterThan(500);
  });

  it('the pre-scan passes over ordinary bodies: ids, ISO timestamps, UUIDs, prices, a value of 0', () => {
    const events = Array.from({ length: 200 }, (_, i) => ({
      type: i % 3 ? 'view' : 'order',
      ts: i % 2 ? ts + i : new Date(ts + i).toISOString(),
      id: `e-${crypto.randomUUID()}`,
      dims: { visitor: i % 2 ? crypto.randomUUID() : `${10n ** 19n + BigInt(i)}`, page: `/p/${i}.1234567890123456789` },
      ...(i % 3 === 0 && { value: i === 3 ? 0 : i % 2 ? 19.99 + i : '1e-400' }),
    }));
    expect(mayHoldInexactNumber(JSON.stringify(events), events)).toBe(false);
    expect(mayHoldInexactNumber(events.map((e) => JSON.stringify(e)).join('\n'), events)).toBe(false);
  });

  it('takes the same values as decimal strings as before, and leaves ordinary numbers alone', () => {
    const text = `[${order('"19.999999999999999"')},${order('"1000000000000.00001"')},${order('20.0')},${order('2e1')},${order('0.1')},${order('1e-7')},${order('1e300')},${order('1000000000000.01')}]`;
    const body = parseJsonArray(text, 10);
    expect(body.lineErrors).toEqual([]);
    expect(body.items).toEqual(JSON.parse(text));
  });

  it('leaves long digit runs inside strings alone (visitor ids, event ids)', () => {
    const text = JSON.stringify([
      { type: 'view', ts, id: '12345678901234567890123', dims: { product: 'P1', visitor: '98765432109876543210' } },
      { type: 'view', ts: '2026-03-15T10:15:00.123456789Z', dims: { product: 'P1', visitor: 'user:12345678901234567890' } },
      { type: 'order', ts, dims: { visitor: 'a,1234567890.1234567890e-400' }, value: 19.99 },
    ]);
    const body = parseJsonArray(text, 10);
    expect(body.lineErrors).toEqual([]);
    expect(body.items).toEqual(JSON.parse(text));
  });

  it('does the same for NDJSON lines, by the event index', () => {
    const body = parseNdjson(`${order('1')}\n\n{"bad":\n${order('19.999999999999999')}\n${order('"19.999999999999999"')}\n`, 10);
    expect(body.items).toEqual([JSON.parse(order('1')), undefined, undefined, JSON.parse(order('"19.999999999999999"'))]);
    expect(body.lineErrors.map((e) => [e.index, e.field])).toEqual([
      [1, '(event)'],
      [2, 'value'],
    ]);
    expect(body.lineErrors[1]!.reason).toMatch(/would be read as 20; send it as a decimal string: "19\.999999999999999"$/);
  });
});

describe('POST /v1/events with a number that does not read exactly', () => {
  let app: CollectorApp;
  let metrics: CollectorMetrics;
  let registry: Registry;
  const enqueued: NormalizedEvent[][] = [];

  beforeAll(async () => {
    registry = new Registry();
    metrics = createCollectorMetrics(registry);
    // The real validation; no Redis: enqueue only records what it was given.
    const real = createIntake({ queues: {} as never, redis: {} as never, rules: loadRules(), source: 'http' });
    const intake: Intake = {
      ...real,
      enqueue: async (_store, events) => (enqueued.push(events), { batchId: 'b1', accepted: events.length, jobIds: ['b1'] }),
    };
    const directory = {
      authenticate: async () => ({ store: 'SHOP1', timeZone: 'UTC', scopes: ['ingest'] }),
    } as unknown as TenantDirectory;
    const backpressure = { admit: () => undefined, redisUp: true } as unknown as Backpressure;
    app = await buildApp({
      log: createLogger({ name: 'collector-test', level: 'silent' }),
      registry,
      metrics,
      intake,
      directory,
      backpressure,
      maxBodyBytes: 1024 * 1024,
      isClosing: () => false,
      isReady: () => true,
    });
  });
  afterAll(async () => app?.close());

  const post = (payload: string, type = 'application/json', query = '') =>
    app.inject({
      method: 'POST',
      url: `/v1/events${query}`,
      headers: { authorization: 'Bearer tk_test', 'content-type': type },
      payload,
    });
  const now = () => Date.now();
  const at = (value: string) => `{"type":"order","ts":${now()},"dims":{"visitor":"V42"},"value":${value}}`;

  it('answers 400 naming [i].value, and counts nothing', async () => {
    enqueued.length = 0;
    const res = await post(`[${at('19.99')},${at('19.999999999999999')}]`);
    expect(res.statusCode).toBe(400);
    const body = res.json();
    expect([body.code, body.field, body.rejected]).toEqual(['TALLY_ERR_VALIDATION', '[1].value', 1]);
    expect(body.errors).toEqual([{ index: 1, field: 'value', reason: expect.stringMatching(/send it as a decimal string/) }]);
    expect(enqueued).toEqual([]);
    expect((await metrics.rejected.get()).values.find((v) => v.labels.reason === 'value')?.value).toBe(1);
  });

  it('leaves a float sum that prints back the same to validation, which refuses its decimals', async () => {
    const res = await post(`[${at('34.989999999999995')}]`);
    expect(res.json().errors).toEqual([{ index: 0, field: 'value', reason: 'has more than 2 decimal places' }]);
  });

  it('refuses the same values sent as decimal strings for their own reasons, as before', async () => {
    const res = await post(`[${at('"19.999999999999999"')},${at('"1000000000000.00001"')},${at('"1000000000000.01"')}]`);
    expect(res.statusCode).toBe(400);
    expect(res.json().errors).toEqual([
      { index: 0, field: 'value', reason: 'has more than 2 decimal places' },
      { index: 1, field: 'value', reason: 'has more than 2 decimal places' },
      { index: 2, field: 'value', reason: 'must be at most 1000000000000' },
    ]);
  });

  it('with ?partial=true (NDJSON) accepts the other events only, their values exact', async () => {
    enqueued.length = 0;
    const res = await post(
      `${at('1000000000000.00001')}\n${at('"19.99"')}\n${at('999999999999.99')}\n`,
      'application/x-ndjson',
      '?partial=true',
    );
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ accepted: 2, rejected: 1, acceptedIndexes: [1, 2], errors: [{ index: 0, field: 'value' }] });
    expect(enqueued.map((events) => events.map((e) => e.value))).toEqual([['19.99', '999999999999.99']]);
  });
});
