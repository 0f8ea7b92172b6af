import { redisKeys, type RedisKeys } from '@tally/key-layout';
import type { DistinctAdds } from '@tally/schema';
import type { Cluster, Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { SKETCH_ACK, SKETCH_ADD, SKETCH_READ, SKETCH_UNION } from './sketch-scripts';

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
  /** What SKETCH_ACK compares: the exact set's size and the HLL's registers at the read. */
  scard: string;
  registers: Buffer;
}

type Cmd = (...args: Array<string | number | Buffer>) => Promise<any>;

/**
 * The Redis side of distinct counts (unique visitors): per row and store-local day, an exact set of 8-byte members
 * while it holds at most EXACT_THRESHOLD of them and a Redis HyperLogLog of all of them. Adding a member twice
 * changes nothing, so batches are added before their counters' apply and again on any redelivery. Unions (for the
 * writer and for queries) run in Redis, with Redis' own HLL encoding and estimator.
 */
export class SketchStore {
  readonly keys: RedisKeys;
  private readonly redis: Redis | Cluster;
  private readonly cmd: Record<string, Cmd> = {};

  constructor(opts: { redis: Redis | Cluster; prefix?: string }) {
    this.redis = opts.redis;
    this.keys = redisKeys(opts.prefix ?? 't');
    for (const [name, lua] of Object.entries({ SKETCH_ADD, SKETCH_READ, SKETCH_ACK, SKETCH_UNION })) {
      const id = `tally${name}`;
      if (!(id in this.redis)) this.redis.defineCommand(id, { lua, numberOfKeys: 1 });
      this.cmd[name] = (...args) => (this.redis as any)[`${id}Buffer`](...args);
    }
  }

  /** Adds a batch's members (rollupDistinct) to the rows' sketches. Idempotent. */
  async add(store: string, adds: DistinctAdds): Promise<void> {
    if (adds.size === 0) return;
    const args: Array<string | number | Buffer> = [EXACT_THRESHOLD, adds.size];
    for (const [pk, fields] of adds) {
      args.push(pk, fields.size);
      for (const [field, members] of fields) {
        args.push(field, members.size);
        for (const m of members) args.push(Buffer.from(m, 'latin1'));
      }
    }
    await this.cmd['SKETCH_ADD']!(this.keys.tag(store), ...args);
  }

  /** The unwritten sketches of each row, in the order of `pks`. */
  async read(store: string, pks: readonly string[]): Promise<LiveSketch[][]> {
    if (pks.length === 0) return [];
    const raw = (await this.cmd['SKETCH_READ']!(this.keys.tag(store), EXACT_THRESHOLD, ...pks)) as Buffer[][];
    return raw.map((flat) => {
      const out: LiveSketch[] = [];
      for (let i = 0; i < flat.length; i += 4) {
        const field = flat[i]!.toString();
        const bar = field.indexOf('|');
        out.push({ field, dayKey: field.slice(0, bar), metric: field.slice(bar + 1), blob: flat[i + 1]!, scard: flat[i + 2]!.toString(), registers: flat[i + 3]! });
      }
      return out;
    });
  }

  /** Forgets written sketches that did not change since they were read. Returns how many were deleted. */
  async ack(store: string, pk: string, written: readonly LiveSketch[]): Promise<number> {
    if (written.length === 0) return 0;
    return Number(await this.cmd['SKETCH_ACK']!(this.keys.tag(store), pk, ...written.flatMap((s) => [s.field, s.scard, s.registers])));
  }

  /**
   * Unions of groups of sketch blobs: per group the distinct count (exact when every blob of the group is exact)
   * and, with wantBlob, the union's blob (exact while it has at most EXACT_THRESHOLD members, else an HLL).
   */
  async union(store: string, groups: ReadonlyArray<readonly Buffer[]>, wantBlob: boolean): Promise<Array<{ count: number; blob: Buffer }>> {
    if (groups.length === 0) return [];
    const args: Array<string | number | Buffer> = [EXACT_THRESHOLD, wantBlob ? '1' : '0', randomUUID(), groups.length];
    for (const g of groups) args.push(g.length, ...g);
    const raw = (await this.cmd['SKETCH_UNION']!(this.keys.tag(store), ...args)) as Array<[number, Buffer]>;
    return raw.map(([count, blob]) => ({ count: Number(count), blob }));
  }
}
