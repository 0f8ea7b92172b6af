import { QueryCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { cellsOfDay, parseDayKey } from '@tally/key-layout';
import { createTestTable } from '@tally/testing';
import { dynamoBackends, useDynamoBackendClient } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';
import {
  createDynamoClient,
  createDynamoMeter,
  fromStoredSketch,
  mergeItems,
  queryItems,
  SKETCH_BYTES_PER_UPDATE,
  SPILL_AT_KB,
  storedSketchesOf,
  writeRowWithSketches,
  type CountEntry,
  type SketchPart,
  type SketchUnion,
} from './index';

// Run on dynalite and on AWS's DynamoDB Local (both refuse an item past 400 KB; DynamoDB Local skipped without java):
// `client` is the one of the backend whose tests run, set as it starts.
let client: DynamoDBClient;
const deps = (table: string) => ({ client, table, meter: createDynamoMeter() });

/*
 * Dense HyperLogLogs without Redis: Redis' dense layout (a 16-byte `HYLL` header, then 16,384 six-bit registers packed
 * low bits first, 12,304 bytes), its registers filled as n random members would (a register, and the rank of a
 * geometric draw), and the union register by register, as PFMERGE makes it. Stored (brotli) they are as large as
 * Redis' own: about 3.6 KB at 5,000 members, 6.0 KB at 20,000, 7.4-7.5 KB from 50,000 to 800,000.
 */
const REGISTERS = 16_384;

function registersOf(blob: Buffer): Uint8Array {
  const regs = new Uint8Array(REGISTERS);
  for (let i = 0; i < REGISTERS; i++) {
    const bit = i * 6;
    const b = 17 + (bit >> 3); // after `H` and the 16-byte header
    regs[i] = ((blob[b]! | ((blob[b + 1] ?? 0) << 8)) >> (bit & 7)) & 63;
  }
  return regs;
}

function denseBlob(regs: Uint8Array): Buffer {
  const out = Buffer.alloc(1 + 16 + (REGISTERS * 6) / 8);
  out.write('HHYLL', 0, 'latin1');
  out[16] = 0x80; // the cached cardinality is not valid
  for (let i = 0; i < REGISTERS; i++) {
    const bit = i * 6;
    const b = 17 + (bit >> 3);
    const v = regs[i]! << (bit & 7);
    out[b]! |= v & 255;
    if (v > 255) out[b + 1]! |= v >> 8;
  }
  return out;
}

function dense(members: number, seed: number): Buffer {
  let s = seed >>> 0;
  // mulberry32: a member's register from one draw, its rank (trailing zeros + 1) from the next.
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const regs = new Uint8Array(REGISTERS);
  for (let i = 0; i < members; i++) {
    const reg = next() & (REGISTERS - 1);
    const w = next();
    const rank = w === 0 ? 33 : 32 - Math.clz32(w & -w);
    if (rank > regs[reg]!) regs[reg] = rank;
  }
  return denseBlob(regs);
}

function unionOf(blobs: readonly Buffer[]): Uint8Array {
  const out = new Uint8Array(REGISTERS);
  for (const b of blobs) registersOf(b).forEach((v, i) => (out[i] = Math.max(out[i]!, v)));
  return out;
}

const union: SketchUnion = async (groups) => groups.map((g) => ({ count: 0, blob: denseBlob(unionOf(g)) }));

/** Every item of a row as DynamoDB sizes it: attribute names plus values (binary: its bytes; a number: about a byte per two digits). */
async function itemSizes(table: string, pk: string): Promise<Map<string, number>> {
  const out = await client.send(
    new QueryCommand({ TableName: table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: pk } } }),
  );
  const size = (v: AttributeValue) => (v.B ? v.B.length : v.N ? Math.ceil(v.N.length / 2) + 1 : (v.S ?? '').length);
  return new Map((out.Items ?? []).map((it) => [it['sk']!.S!, Object.entries(it).reduce((n, [name, v]) => n + name.length + size(v), 0)]));
}

/** A row of `metrics.length` distinct metrics, each with a dense sketch of `members` visitors on every day of March 2026. */
function month(metrics: readonly string[], members: number) {
  const days = Array.from({ length: 31 }, (_, i) => `2026-${String(60 + i).padStart(3, '0')}`);
  const live = days.flatMap((dayKey, d) =>
    metrics.map((metric, m): SketchPart => ({ dayKey, metric, blob: dense(members, 1 + d * 17 + m) })),
  );
  const entries = days.map((dayKey, d): CountEntry => ({ seq: d + 1, dayKey, metric: 'v', value: 1n }));
  return { days, live, entries };
}

/** Checks that every cell of the row's sketches is the union of exactly the live sketches that go into it. */
async function expectCells(table: string, pk: string, live: readonly SketchPart[]) {
  const byItem = new Map((await queryItems(deps(table), pk, 'M', 'TOTAL')).items.map((it) => [it.sk, it]));
  const want = new Map<string, Buffer[]>();
  for (const p of live) {
    for (const c of cellsOfDay(parseDayKey(p.dayKey), p.metric))
      want.set(`${c.sk} ${c.attr}`, [...(want.get(`${c.sk} ${c.attr}`) ?? []), p.blob]);
  }
  for (const [key, blobs] of want) {
    const [sk, attr] = key.split(' ') as [string, string];
    const stored = storedSketchesOf(byItem, sk, attr).map((b) => fromStoredSketch(b));
    expect(stored.length, key).toBeGreaterThan(0);
    expect(Buffer.from(unionOf(stored)).equals(Buffer.from(unionOf(blobs))), key).toBe(true);
  }
  return byItem;
}

describe.each(dynamoBackends())('dense sketches of several distinct metrics on one row, on $name', (backend) => {
  const { skip } = backend;
  const emulator = useDynamoBackendClient(backend, (endpoint) => (client = createDynamoClient({ endpoint, region: 'us-east-1' })));

  it.skipIf(skip)(
    'keep every item far below 400 KB: a month of daily flushes of 2 metrics of 60,000 visitors a day, and a month of 4 metrics of 5,000 in one flush',
    async () => {
      const table = await createTestTable(emulator.endpoint);
      const bound = (SPILL_AT_KB + 40) * 1024 + SKETCH_BYTES_PER_UPDATE;
      // 2 metrics x 32 cells (31 days and the month) x about 7.5 KB: about 480 KB of sketches in the month item. The
      // writer flushes the row once a day, that day's counts and sketches (before the overflow layout took sketches,
      // the 27th flush found the month item at 400,008 bytes and could not add its 15 KB).
      const daily = month(['uv', 'ub'], 60_000);
      for (const [d, dayKey] of daily.days.entries()) {
        const r = await writeRowWithSketches(
          deps(table),
          union,
          'S',
          daily.entries.slice(d, d + 1),
          daily.live.filter((p) => p.dayKey === dayKey),
        );
        expect(r.sketchesWritten).toHaveLength(2);
      }
      // The writer was down for the month: one flush holds all 31 days of 4 metrics (4 x 32 x 3.6 KB, about 466 KB),
      // and two writers run it at once (a job whose lock lapsed): the sketch versions keep every member.
      const backlog = month(['uv', 'ub', 'us', 'ua'], 5_000);
      const both = await Promise.all(
        [1, 2].map(() => writeRowWithSketches(deps(table), union, 'S#product#P1', backlog.entries, backlog.live)),
      );
      for (const r of both) expect(r.sketchesWritten).toHaveLength(backlog.live.length);

      for (const [pk, { live, entries }] of [
        ['S', daily],
        ['S#product#P1', backlog],
      ] as const) {
        const items = await expectCells(table, pk, live);
        expect(mergeItems(items.values(), [])).toEqual(mergeItems([], entries));
        expect(items.get('M2026-03')!.spilled).toBe(true);
        const sizes = await itemSizes(table, pk);
        expect(Math.max(...sizes.values())).toBeLessThan(bound);
      }
    },
  );
});
