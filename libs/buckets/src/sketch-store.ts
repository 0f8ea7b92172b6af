import { REDIS_SUFFIX as S, redisKeys, type RedisKeys } from '@tally/key-layout';
import type { DistinctAdds } from '@tally/schema';
import type { Cluster, Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { runScript } from './script-table';
import { SKETCH_ACK, SKETCH_ADD, SKETCH_FIELDS, SKETCH_READ, SKETCH_UNION } from './sketch-scripts';

/** Up to this many distinct members a sketch is an exact set; above it, a HyperLogLog (docs/DESIGN.md "Unique visitors"). */
export const EXACT_THRESHOLD = 300;

/** A row's sketch of one day and metric not yet written to DynamoDB, as read from Redis. */
export interface LiveSketch {
  /** `<dayKey>|<metric code>`. */
  field: string;
  dayKey: string;
  metric: string;
  /** `X` + members (exact) or `H` + a Redis HLL string. */
  blob: Buffer;
  /** What SKETCH_ACK compares (with an exact blob's members): the exact set's size and the HLL's registers at the read. */
  scard: string;
  registers: Buffer;
}

/**
 * The Redis side of distinct counts (unique visitors): per row and store-local day, an exact set of 8-byte members
 * while it holds at most EXACT_THRESHOLD of them and a Redis HyperLogLog of all of them. Adding a member twice
 * changes nothing, so the aggregator adds a batch's members after its counters' apply, whether it applied the batch
 * or found it applied already (a redelivery, or a retry after a crash between the two), and never for a batch the
 * apply refused. Unions (for the writer and for queries) run in Redis, with Redis' own HLL encoding and estimator.
 */
export class SketchStore {
  readonly keys: RedisKeys;
  private readonly redis: Redis | Cluster;

  constructor(opts: { redis: Redis | Cluster; prefix?: string | undefined }) {
    this.redis = opts.redis;
    this.keys = redisKeys(opts.prefix ?? 't');
  }

  /** A row's set of unwritten sketch fields (`ur`). */
  readonly rowsKey = (store: string, pk: string) => this.keys.tag(store) + S.sketchRows + pk;
  /** A row's sketch of one field: its exact set (`us`) and its HLL (`uh`). */
  readonly sketchKeys = (store: string, pk: string, field: string) => [
    this.keys.tag(store) + S.sketchSet + pk + '|' + field,
    this.keys.tag(store) + S.sketchHll + pk + '|' + field,
  ];

  /**
   * Adds a batch's members (rollupDistinct, or flat as a rolled-up job carries them: libs/schema flattenDistinct,
   * checked by libs/queues checkFlatDistinct) to the rows' sketches. Idempotent. Adds nothing to a deleted store
   * (its tombstone), nor to the rows of visitors erased at `now` (ms; the aggregator passes its apply's).
   */
  async add(store: string, adds: DistinctAdds | ReadonlyArray<string | number>, now = Date.now()): Promise<void> {
    if (Array.isArray(adds)) return this.addFlat(store, adds, now);
    const map = adds as DistinctAdds;
    if (map.size === 0) return;
    const keys: string[] = [];
    const args: Array<string | number | Buffer> = [];
    for (const [pk, fields] of map) {
      keys.push(this.rowsKey(store, pk));
      args.push(fields.size);
      for (const [field, members] of fields) {
        keys.push(...this.sketchKeys(store, pk, field));
        args.push(field, Buffer.from([...members].join(''), 'latin1'));
      }
    }
    await this.runAdd(store, now, keys, args);
  }

  private async runAdd(store: string, now: number, keys: string[], args: Array<string | number | Buffer>): Promise<void> {
    await runScript(
      this.redis,
      SKETCH_ADD,
      { tombstone: this.keys.tombstone(store), erased: this.keys.erased(store) },
      { threshold: EXACT_THRESHOLD, now: Math.floor(now), rowsPrefix: this.rowsKey(store, '') },
      { keys, args },
    );
  }

  /** add() of flat members: each field's members go to the script as one string, its base64 decoded once. */
  private async addFlat(store: string, flat: ReadonlyArray<string | number>, now: number): Promise<void> {
    if (flat.length === 0) return;
    const keys: string[] = [];
    const args: Array<string | number | Buffer> = [];
    for (let i = 0; i < flat.length;) {
      const pk = String(flat[i]);
      const n = Number(flat[i + 1]);
      keys.push(this.rowsKey(store, pk));
      args.push(n);
      for (let j = i + 2; j < i + 2 + 2 * n; j += 2) {
        const field = String(flat[j]);
        const [us, uh] = this.sketchKeys(store, pk, field);
        keys.push(us!, uh!);
        args.push(field, Buffer.from(String(flat[j + 1]), 'base64'));
      }
      i += 2 + 2 * n;
    }
    await this.runAdd(store, now, keys, args);
  }

  /**
   * The unwritten sketches of each row, in the order of `pks`: the rows' fields, then the sketches (two reads; a
   * sketch added between them is read by the next call, one acked between them reads as empty: it is in DynamoDB).
   */
  async read(store: string, pks: readonly string[]): Promise<LiveSketch[][]> {
    if (pks.length === 0) return [];
    const fields = (await runScript(this.redis, SKETCH_FIELDS, {}, {}, { keys: pks.map((pk) => this.rowsKey(store, pk)) })) as string[][];
    const wanted = pks.flatMap((pk, r) => fields[r]!.map((field) => ({ r, field })));
    const out: LiveSketch[][] = pks.map(() => []);
    if (wanted.length === 0) return out;
    const raw = await runScript(
      this.redis,
      SKETCH_READ,
      {},
      { threshold: EXACT_THRESHOLD },
      { keys: wanted.flatMap(({ r, field }) => this.sketchKeys(store, pks[r]!, field)) },
      { buffers: true },
    );
    wanted.forEach(({ r, field }, i) => {
      const [blob, scard, registers] = raw[i]! as [Buffer, Buffer, Buffer];
      if (blob.length === 1 && scard.toString() === '0') return; // acked in between
      const bar = field.indexOf('|');
      out[r]!.push({ field, dayKey: field.slice(0, bar), metric: field.slice(bar + 1), blob, scard: scard.toString(), registers });
    });
    return out;
  }

  /** Forgets written sketches that did not change since they were read. Returns how many were deleted. */
  async ack(store: string, pk: string, written: readonly LiveSketch[]): Promise<number> {
    if (written.length === 0) return 0;
    const keys = written.flatMap((s) => this.sketchKeys(store, pk, s.field));
    const r = await runScript(
      this.redis,
      SKETCH_ACK,
      { rows: this.rowsKey(store, pk) },
      {},
      { keys, args: written.flatMap((s) => [s.field, s.scard, s.registers, s.blob[0] === 0x58 /* X */ ? s.blob.subarray(1) : '']) },
    );
    return Number(r);
  }

  /**
   * Unions of groups of sketch blobs: per group the distinct count, `exact` when every blob of the group is exact
   * (else it is the HyperLogLog's estimate), and, with wantBlob, the union's blob (exact while it has at most
   * EXACT_THRESHOLD members, else an HLL).
   */
  async union(
    store: string,
    groups: ReadonlyArray<readonly Buffer[]>,
    wantBlob: boolean,
  ): Promise<Array<{ count: number; exact: boolean; blob: Buffer }>> {
    if (groups.length === 0) return [];
    const scratch = `${this.keys.tag(store)}${S.sketchScratch}${randomUUID()}`;
    const keys: string[] = [];
    const args: Array<number | Buffer> = [];
    groups.forEach((g, gi) => {
      keys.push(`${scratch}:${gi}`);
      g.forEach((b, bi) => {
        if (b[0] === 0x48 /* H */) keys.push(`${scratch}:${gi}:${bi}`);
      });
      args.push(g.length, ...g);
    });
    const raw = await runScript(
      this.redis,
      SKETCH_UNION,
      {},
      { threshold: EXACT_THRESHOLD, wantBlob: wantBlob ? '1' : '0' },
      { keys, args },
      { buffers: true },
    );
    return raw.map(([count, blob], gi) => ({ count: Number(count), exact: groups[gi]!.every((b) => b[0] === 0x58 /* X */), blob }));
  }
}
