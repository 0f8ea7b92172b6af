import { Temporal } from '@js-temporal/polyfill';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addDays,
  addMonths,
  cellsOfDay,
  dayAttr,
  dayKey,
  entityPk,
  fromDayOfYear,
  fromEpochDay,
  isValidTimeZone,
  keySlot,
  localDate,
  monthAttr,
  monthSk,
  parseDate,
  parseDayKey,
  parseOutboxField,
  parsePk,
  parseYearAttr,
  redisKeys,
  RESERVED_ATTRS,
  reservedAttrOf,
  OLDEST_STAMP_DAYS,
  retentionExpiry,
  sharesInternalHashTag,
  STORE_ID_PATTERN,
  storeShard,
  toEpochDay,
  TOTAL_SK,
  totalAttr,
  yearAttr,
  encodeKeyValue,
  decodeKeyValue,
  ID_PATTERN,
  MAX_ENCODED_VALUE_BYTES,
} from './index';

const at = (iso: string) => Date.parse(iso);
const ld = (iso: string, tz: string) => {
  const d = localDate(at(iso), tz);
  return `${d.year}-${String(d.month).padStart(2, '0')}-${String(d.day).padStart(2, '0')}/${d.doy}`;
};

describe('time binning in the store time zone', () => {
  it('bins the article example: May 3rd 2023 is day 123', () => {
    expect(ld('2023-05-03T10:15:00Z', 'UTC')).toBe('2023-05-03/123');
    expect(ld('2023-05-04T00:00:00Z', 'UTC')).toBe('2023-05-04/124');
  });

  it('handles the spring-forward DST change (America/New_York 2023-03-12)', () => {
    // 01:59 EST -> 03:00 EDT at 07:00Z. Local midnight before is 05:00Z, after is 04:00Z.
    expect(ld('2023-03-12T04:59:59.999Z', 'America/New_York')).toBe('2023-03-11/70');
    expect(ld('2023-03-12T05:00:00Z', 'America/New_York')).toBe('2023-03-12/71');
    expect(ld('2023-03-13T03:59:59.999Z', 'America/New_York')).toBe('2023-03-12/71');
    expect(ld('2023-03-13T04:00:00Z', 'America/New_York')).toBe('2023-03-13/72');
  });

  it('handles the fall-back DST change (Europe/London 2023-10-29)', () => {
    // 02:00 BST -> 01:00 GMT at 01:00Z; the day has 25 hours, 2023-10-28 23:00Z to 2023-10-30 00:00Z.
    expect(ld('2023-10-28T22:59:59.999Z', 'Europe/London')).toBe('2023-10-28/301');
    expect(ld('2023-10-28T23:00:00Z', 'Europe/London')).toBe('2023-10-29/302');
    expect(ld('2023-10-29T23:59:59.999Z', 'Europe/London')).toBe('2023-10-29/302');
    expect(ld('2023-10-30T00:00:00Z', 'Europe/London')).toBe('2023-10-30/303');
  });

  it('has day 366 in leap years only', () => {
    expect(ld('2024-12-31T12:00:00Z', 'UTC')).toBe('2024-12-31/366');
    expect(ld('2023-12-31T12:00:00Z', 'UTC')).toBe('2023-12-31/365');
    expect(ld('2024-02-29T12:00:00Z', 'UTC')).toBe('2024-02-29/60');
    expect(ld('2024-03-01T00:00:00Z', 'UTC')).toBe('2024-03-01/61');
    expect(ld('2023-03-01T00:00:00Z', 'UTC')).toBe('2023-03-01/60');
    expect(() => fromDayOfYear(2023, 366)).toThrow(/does not exist/);
    expect(fromDayOfYear(2024, 366)).toEqual({ year: 2024, month: 12, day: 31, doy: 366 });
  });

  it('crosses year ends in the store zone, not in UTC', () => {
    // +14:00: new year arrives at 10:00Z on Dec 31.
    expect(ld('2023-12-31T09:59:59.999Z', 'Pacific/Kiritimati')).toBe('2023-12-31/365');
    expect(ld('2023-12-31T10:00:00Z', 'Pacific/Kiritimati')).toBe('2024-01-01/1');
    // -12:00: still Dec 31 at 11:59Z on Jan 1.
    expect(ld('2025-01-01T11:59:59.999Z', 'Etc/GMT+12')).toBe('2024-12-31/366');
    expect(ld('2025-01-01T12:00:00Z', 'Etc/GMT+12')).toBe('2025-01-01/1');
  });

  it('handles a +05:45 zone (Asia/Kathmandu)', () => {
    expect(ld('2024-02-28T18:14:59.999Z', 'Asia/Kathmandu')).toBe('2024-02-28/59');
    expect(ld('2024-02-28T18:15:00Z', 'Asia/Kathmandu')).toBe('2024-02-29/60');
    expect(ld('2024-12-31T18:15:00Z', 'Asia/Kathmandu')).toBe('2025-01-01/1');
  });

  it('validates IANA names', () => {
    expect(isValidTimeZone('Europe/Paris')).toBe(true);
    expect(isValidTimeZone('UTC')).toBe(true);
    expect(isValidTimeZone('Mars/Olympus')).toBe(false);
    expect(isValidTimeZone('')).toBe(false);
  });

  const zones = [
    'UTC',
    'Europe/London',
    'Europe/Berlin',
    'America/New_York',
    'America/Los_Angeles',
    'America/Phoenix',
    'America/Sao_Paulo',
    'Australia/Lord_Howe',
    'Australia/Adelaide',
    'Asia/Kathmandu',
    'Asia/Kolkata',
    'Pacific/Chatham',
    'Pacific/Kiritimati',
    'Etc/GMT+12',
    'Pacific/Apia',
    'America/St_Johns',
    'Asia/Tehran',
    'Africa/Casablanca',
    'America/Santiago',
    'Antarctica/Troll',
  ];

  it('agrees with an independent implementation (Temporal) on random instants and zones', () => {
    fc.assert(
      fc.property(fc.integer({ min: Date.UTC(1972, 6, 1), max: Date.UTC(2100, 0, 1) }), fc.constantFrom(...zones), (ts, tz) => {
        const z = Temporal.Instant.fromEpochMilliseconds(ts).toZonedDateTimeISO(tz);
        const d = localDate(ts, tz);
        expect([d.year, d.month, d.day, d.doy]).toEqual([z.year, z.month, z.day, z.dayOfYear]);
      }),
      { numRuns: 20_000, seed: 20231 },
    );
  });

  it('agrees with Temporal on instants next to every DST transition of 2020-2030', () => {
    for (const tz of zones) {
      let z = Temporal.Instant.fromEpochMilliseconds(Date.UTC(2020, 0, 1)).toZonedDateTimeISO(tz);
      for (let i = 0; i < 40; i++) {
        const next = z.getTimeZoneTransition('next');
        if (!next || next.year > 2030) break;
        for (const delta of [-1, 0, 1, 3_600_000 - 1, -3_600_000]) {
          const ts = next.epochMilliseconds + delta;
          const t = Temporal.Instant.fromEpochMilliseconds(ts).toZonedDateTimeISO(tz);
          const d = localDate(ts, tz);
          expect([tz, d.year, d.month, d.day, d.doy]).toEqual([tz, t.year, t.month, t.day, t.dayOfYear]);
        }
        z = next;
      }
    }
  });
});

describe('calendar arithmetic', () => {
  it('round-trips epoch days', () => {
    fc.assert(
      fc.property(fc.integer({ min: -200_000, max: 200_000 }), (n) => {
        expect(toEpochDay(fromEpochDay(n))).toBe(n);
      }),
    );
    expect(fromEpochDay(0)).toEqual({ year: 1970, month: 1, day: 1, doy: 1 });
  });

  it('adds days and months across year ends', () => {
    expect(addDays(parseDate('2023-12-31')!, 1)).toEqual({ year: 2024, month: 1, day: 1, doy: 1 });
    expect(addDays(parseDate('2024-03-01')!, -1)).toEqual({ year: 2024, month: 2, day: 29, doy: 60 });
    expect(addMonths({ year: 2023, month: 1 }, -2)).toMatchObject({ year: 2022, month: 11, day: 1 });
    expect(addMonths({ year: 2023, month: 11 }, 2)).toMatchObject({ year: 2024, month: 1 });
  });

  it("expires a retained visitor's TOTAL with the store's current month, in its time zone", () => {
    const expiry = (y: number, m: number) => (toEpochDay({ year: y, month: m, day: 1 }) + 1) * 86_400;
    // December 1st, 05:00 in Kiritimati (UTC+14) is still November 30th in UTC: the store's month is December.
    const now = at('2026-11-30T15:00:00Z');
    expect(retentionExpiry(TOTAL_SK, 1, now, 'Pacific/Kiritimati')).toBe(expiry(2027, 1));
    expect(retentionExpiry(TOTAL_SK, 1, now, 'UTC')).toBe(expiry(2026, 12));
    expect(retentionExpiry(TOTAL_SK, 12, now, 'Pacific/Kiritimati')).toBe(expiry(2027, 12));
    // A month item goes with its own month, whatever the zone.
    expect(retentionExpiry('M2026-12', 1, now, 'Pacific/Kiritimati')).toBe(expiry(2027, 1));
    expect(retentionExpiry('D2026-335', 1, now, 'UTC')).toBeUndefined();
  });

  it('never stamps a month of long ago more than a year in the past (DynamoDB ignores stamps over five years old)', () => {
    const expiry = (y: number, m: number) => (toEpochDay({ year: y, month: m, day: 1 }) + 1) * 86_400;
    const now = at('2032-06-15T18:00:00Z');
    const yearAgo = (toEpochDay({ year: 2032, month: 6, day: 15 }) - OLDEST_STAMP_DAYS) * 86_400;
    expect(OLDEST_STAMP_DAYS).toBe(365);
    // An event six years late: its month's stamp would be over five years past, and the item kept for ever.
    expect(retentionExpiry('M2026-05', 1, now, 'UTC')).toBe(yearAgo);
    expect(retentionExpiry('M2026-05', 12, now, 'Pacific/Kiritimati')).toBe(yearAgo);
    // Stamps up to a year past, or in the future, are as the month says.
    expect(retentionExpiry('M2031-06', 1, now, 'UTC')).toBe(expiry(2031, 7));
    expect(retentionExpiry('M2031-05', 1, now, 'UTC')).toBe(yearAgo);
    expect(retentionExpiry('M2026-05', 80, now, 'UTC')).toBe(expiry(2033, 1));
  });

  it('parses only real dates', () => {
    expect(parseDate('2023-02-29')).toBeUndefined();
    expect(parseDate('2024-02-29')).toMatchObject({ doy: 60 });
    expect(parseDate('2024-13-01')).toBeUndefined();
    expect(parseDate('24-01-01')).toBeUndefined();
  });
});

describe('DynamoDB names (the article layout)', () => {
  it('names rows and attributes exactly as docs/DESIGN.md', () => {
    expect(monthSk(2023, 5)).toBe('M2023-05');
    expect(TOTAL_SK).toBe('TOTAL');
    expect(dayAttr(123, 'OrderCount')).toBe('D123.OrderCount');
    expect(dayAttr(7, 'v')).toBe('D007.v');
    expect(monthAttr(5, 'OrderCount')).toBe('M05.OrderCount');
    expect(yearAttr(2023, 'OrderCount')).toBe('Y2023.OrderCount');
    expect(parseYearAttr(yearAttr(2023, 'OrderCount'))).toBe(2023);
    expect([monthAttr(5, 'OrderCount'), dayAttr(7, 'v'), totalAttr('OrderCount'), 'wm'].map(parseYearAttr)).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
    expect(entityPk('STORE12345', undefined)).toBe('STORE12345');
    expect(entityPk('STORE12345', 'product', ['P1'])).toBe('STORE12345#product#P1');
    expect(parsePk('STORE12345#product#P.1:x')).toEqual({ store: 'STORE12345', entity: 'product', keyValues: ['P.1:x'] });
  });

  it("knows which metric codes would name one of the items' own attributes", () => {
    expect([...RESERVED_ATTRS]).toEqual(['pk', 'sk', 'wm', 'wm.p', 'wm.x', 'wm.h', 'expiresAt']);
    for (const a of RESERVED_ATTRS) expect(reservedAttrOf(a)).toBe(a); // bare on TOTAL (`wm.p` only were a code to hold a dot)
    for (const code of ['v', 'uv', 'WM', 'wmp', 'p', 'h', 'expires', 'TOTAL']) expect(reservedAttrOf(code)).toBeUndefined();
    // Every attribute name of a code that reservedAttrOf passes is clear of the reserved ones.
    for (const code of ['v', 'p', 'x', 'h', 'wm_p']) {
      const names = [...cellsOfDay(fromDayOfYear(2024, 366), code), ...cellsOfDay(fromDayOfYear(2023, 1), `${code}#P1`)];
      for (const { attr } of names) expect(RESERVED_ATTRS.has(attr)).toBe(false);
    }
  });

  it('maps a day to its four cells', () => {
    expect(cellsOfDay(fromDayOfYear(2024, 366), 'ViewCount')).toEqual([
      { sk: 'M2024-12', attr: 'D366.ViewCount' },
      { sk: 'M2024-12', attr: 'M12.ViewCount' },
      { sk: 'TOTAL', attr: 'ViewCount' },
      { sk: 'TOTAL', attr: 'Y2024.ViewCount' },
    ]);
  });
});

describe('Redis names', () => {
  it('puts every key of a store under one hash tag', () => {
    const k = redisKeys('t');
    const keys = [
      k.epoch('S1'),
      k.bucket('S1', 17, 'S1#product#P1'),
      k.bucketRows('S1', 17),
      k.sealed('S1'),
      k.folded('S1'),
      k.outbox('S1', 'S1'),
      k.dirty('S1'),
      k.due('S1'),
      k.batch('S1', 'abc'),
      k.cache('S1', 'S1#visitor#V'),
      k.cacheVersion('S1', 'S1#visitor#V'),
      k.counts('S1'),
      k.unknownStore('S1'),
    ];
    for (const key of keys) expect(key.startsWith('t:{S1}:')).toBe(true);
    expect(new Set(keys).size).toBe(keys.length);
    expect(k.work(3)).toBe('t:{t:w3}:');
  });

  it("keeps a store's limits and idempotency records in its slot, outside the prefix its deletion removes", () => {
    const k = redisKeys('t');
    const keys = [k.ingestBudget('S1'), k.idempotency('S1', 'batch-abc')];
    expect(k.idempotency('S1', 'batch-abc')).toBe('t:idem:{S1}:batch-abc');
    for (const key of keys) {
      expect(keySlot(key)).toBe(keySlot(k.tag('S1')));
      expect(key.startsWith(k.tag('S1'))).toBe(false);
    }
  });

  it("tells the store ids that can be the hash tag of the installation's own keys, for any KEY_PREFIX", () => {
    // Store t:w0 under KEY_PREFIX t: its keys would be work-set shard 0's (t:{t:w0}:…).
    expect(redisKeys('t').tag('t:w0')).toBe(redisKeys('t').work(0));
    for (const prefix of ['t', 'lg', 'z0123456789abcde']) {
      for (const shard of [0, 7, 255]) expect(sharesInternalHashTag(/\{(.*)\}/.exec(redisKeys(prefix).work(shard))![1]!)).toBe(true);
    }
    for (const id of ['t:events:0', 'q:dynamo-writes:15', 't:seal', 't:maintenance', 't:events', 'A.b:w12', 't:w0:3']) {
      expect([id, STORE_ID_PATTERN.test(id), sharesInternalHashTag(id)]).toEqual([id, true, true]);
    }
    for (const id of [
      'S1',
      'w0',
      'events',
      'acme:eu',
      'acme:w',
      'acme:wx',
      'acme:w1x',
      'acme:W1',
      'acme:events1',
      'acme:seals',
      'acme:w1:x',
    ]) {
      expect([id, sharesInternalHashTag(id)]).toEqual([id, false]);
    }
  });

  it('shards stores stably and evenly', () => {
    expect(storeShard('S1', 1)).toBe(0);
    expect(storeShard('STORE12345', 16)).toBe(storeShard('STORE12345', 16));
    const hits = new Array(16).fill(0);
    for (let i = 0; i < 16_000; i++) hits[storeShard(`STORE${i}`, 16)]++;
    for (const h of hits) expect(h).toBeGreaterThan(800); // 1,000 each on average
    expect(Math.max(...hits)).toBeLessThan(1_200);
  });

  it('round-trips fields', () => {
    const d = parseDayKey(dayKey({ year: 2024, doy: 366 }));
    expect(d).toMatchObject({ year: 2024, month: 12, day: 31 });
    expect(parseOutboxField('1700000000123|2024-366|pv#A.b:c')).toEqual({
      seq: 1700000000123,
      dayKey: '2024-366',
      metric: 'pv#A.b:c',
    });
  });
});

describe('encoded key values (page paths)', () => {
  it('encodes any value of 1-96 UTF-8 bytes as an id without separators, and decodes it back', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), (raw) => {
        fc.pre(Buffer.byteLength(raw) <= MAX_ENCODED_VALUE_BYTES && Buffer.from(raw, 'utf8').toString('utf8') === raw);
        const id = encodeKeyValue(raw);
        expect(id).toMatch(ID_PATTERN);
        expect(id).not.toMatch(/[#|:.]/);
        expect(decodeKeyValue(id)).toBe(raw);
      }),
      { numRuns: 2_000 },
    );
    const path = '/shop/shoes/red#top|x:y';
    expect(encodeKeyValue(path)).toBe(Buffer.from(path).toString('base64url'));
    expect(decodeKeyValue(encodeKeyValue('/'))).toBe('/');
    const longest = `/${'é'.repeat(47)}a`; // 96 bytes
    expect(encodeKeyValue(longest)).toHaveLength(128);
    expect(() => encodeKeyValue(`${longest}b`)).toThrow(/1-96 bytes/);
    expect(() => encodeKeyValue('')).toThrow(/1-96 bytes/);
  });

  it('decodes only canonical encodings of UTF-8', () => {
    expect(decodeKeyValue('L2E')).toBe('/a');
    expect(decodeKeyValue('L2F')).toBeUndefined(); // trailing bits set: not what encodeKeyValue makes
    expect(decodeKeyValue('L2E=')).toBeUndefined();
    expect(decodeKeyValue('P1.x')).toBeUndefined();
    expect(decodeKeyValue('_w')).toBeUndefined(); // 0xff is not UTF-8
  });
});
