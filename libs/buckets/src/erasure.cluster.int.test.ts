import { keySlot } from '@tally/key-layout';
import { compileRules } from '@tally/schema';
import { startRedisCluster, type RedisClusterHandle } from '@tally/testing';
import { Cluster, Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BucketStore } from './bucket-store';
import { BucketEraser } from './erasure';
import { recordTopHistory } from './top-history';
import { testRules } from './test-store';

// deleteStoreKeys on a Redis Cluster while the store's slot is resharded (docs/DESIGN.md "Privacy").
const SLOT = keySlot('t:{S}:');
/** Another store whose keys share the slot of S's. */
const OTHER = Array.from({ length: 100_000 }, (_, i) => `X${i}`).find((s) => keySlot(`t:{${s}}:`) === SLOT)!;

let cluster: RedisClusterHandle;
let c: Cluster;
let buckets: BucketStore;
let eraser: BucketEraser;

beforeEach(async () => {
  cluster = await startRedisCluster({ masters: 3 });
  c = new Cluster(cluster.seeds, { redisOptions: { maxRetriesPerRequest: 0 } });
  buckets = new BucketStore({ redis: c, rules: testRules, prefix: 't' });
  eraser = new BucketEraser({ redis: c, buckets });
});
afterEach(async () => {
  c?.disconnect();
  await cluster?.stop();
});

/** Folded counts in an outbox, and `extra` keys more of the store: more than one SCAN page's worth with both stores. */
async function fill(store: string, extra: number) {
  await buckets.apply(store, 'b1', new Map([[store, new Map([['2023-123|v', 1n]])]]) as never, { now: 1, dedupeTtlSeconds: 60 });
  await buckets.seal(store, { now: 2, minAgeMs: 0 });
  await buckets.foldSealed(store, { now: 3 });
  await c.mset(Object.fromEntries(Array.from({ length: extra }, (_, i) => [`t:{${store}}:extra${i}`, '1'])));
}

/** The keys matching `pattern` on every node (a key is on one node, or on two while MIGRATE copies it). */
async function keysOnNodes(pattern: string): Promise<string[]> {
  return (await Promise.all(cluster.nodes.map(async (n) => withNode(n.port, (r) => r.keys(pattern))))).flat().sort();
}

async function withNode<T>(port: number, use: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ port, host: '127.0.0.1' });
  try {
    return await use(r);
  } finally {
    r.disconnect();
  }
}

/** Moves SLOT's keys (or only `keys`) from one master to another, and the slot too unless `finish` is false. */
async function moveSlot(from: number, to: number, opts: { keys?: string[]; finish?: boolean } = {}) {
  const [fromId, toId] = await Promise.all([from, to].map((p) => withNode(p, (r) => r.cluster('MYID'))));
  await withNode(to, (r) => r.cluster('SETSLOT', SLOT, 'IMPORTING', fromId!));
  await withNode(from, async (r) => {
    await r.cluster('SETSLOT', SLOT, 'MIGRATING', toId!);
    const next = async () => (opts.keys ? [] : r.cluster('GETKEYSINSLOT', SLOT, 100));
    for (let keys = opts.keys ?? (await next()); keys.length; keys = await next())
      await r.migrate('127.0.0.1', to, '', 0, 5000, 'KEYS', ...keys);
  });
  if (opts.finish === false) return;
  const others = cluster.nodes.map((n) => n.port).filter((p) => p !== from && p !== to);
  for (const port of [to, from, ...others]) await withNode(port, (r) => r.cluster('SETSLOT', SLOT, 'NODE', toId!));
}

const refresh = () => new Promise<void>((resolve) => c.refreshSlotsCache(() => resolve()));
const port = (node: Redis) => node.options.port!;

describe('deleteStoreKeys on a Redis Cluster', () => {
  it('deletes every key of the store when its slot moves, during the deletion, to a master already read', async () => {
    await fill('S', 700);
    await fill(OTHER, 600);
    const otherKeys = await keysOnNodes(`t:{${OTHER}}:*`);
    let masters = c.nodes('master');
    // The slot on a master that is not the first: a deletion reading the masters in turn reads another one first.
    if ((await cluster.masterOf('t:{S}:')).port === port(masters[0]!)) await moveSlot(port(masters[0]!), port(masters[1]!));
    await refresh();
    masters = c.nodes('master');
    const owner = (await cluster.masterOf('t:{S}:')).port;
    const target = port(masters[0]!);
    const stored = (await keysOnNodes('t:{S}:*')).length;

    // As soon as a master's keys of the slot are read (one node's SCAN done), the slot moves to
    // the first master: the one a per-node SCAN reads first.
    let moved = false;
    for (const node of masters) {
      const n = node as unknown as Record<'scan', (...a: unknown[]) => Promise<unknown>>;
      const scan = n.scan.bind(node);
      const after = async <T>(reply: T, read: boolean) => {
        if (read && !moved) {
          moved = true;
          await moveSlot(owner, target);
        }
        return reply;
      };
      n.scan = async (...a) => {
        const reply = (await scan(...a)) as [string, string[]];
        return after(reply, reply[0] === '0');
      };
    }
    await eraser.markStoreDeleted('S', 60);
    expect(await eraser.deleteStoreKeys('S')).toBe(stored);

    expect(moved).toBe(true);
    expect((await cluster.masterOf('t:{S}:')).port).toBe(target);
    expect(await keysOnNodes('t:{S}:*')).toEqual(['t:{S}:x']);
    // The other store's keys in that slot are all kept.
    expect(await keysOnNodes(`t:{${OTHER}}:*`)).toEqual(otherKeys);
  }, 120_000);

  it('deletes the keys on both masters of a slot being migrated', async () => {
    await fill('S', 300);
    await fill(OTHER, 300);
    const otherKeys = await keysOnNodes(`t:{${OTHER}}:*`);
    const from = (await cluster.masterOf('t:{S}:')).port;
    const to = cluster.nodes.find((n) => n.port !== from)!.port;
    // Every other key of each store on the importing master, the others left on the migrating one.
    const half = [...(await keysOnNodes('t:{S}:*')), ...otherKeys].filter((_, i) => i % 2 === 0);
    await moveSlot(from, to, { keys: half, finish: false });
    expect(await withNode(to, (r) => r.keys('t:{S}:*'))).not.toEqual([]);
    expect(await withNode(from, (r) => r.keys('t:{S}:*'))).not.toEqual([]);

    await eraser.markStoreDeleted('S', 60);
    await eraser.deleteStoreKeys('S');
    expect(await keysOnNodes('t:{S}:*')).toEqual(['t:{S}:x']);
    await moveSlot(from, to);
    expect(await keysOnNodes('t:{S}:*')).toEqual(['t:{S}:x']);
    expect(await keysOnNodes(`t:{${OTHER}}:*`)).toEqual(otherKeys);
    expect(await c.exists(...otherKeys)).toBe(otherKeys.length);
  }, 120_000);
});

describe('eraseRow on a Redis Cluster', () => {
  it("takes a ranked visitor out of the store's rankings (in the store's slot; the aggregators' record in another)", async () => {
    const rules = compileRules({
      ...testRules.rules,
      entities: { ...testRules.rules.entities, visitor: { ...testRules.rules.entities.visitor!, rank: true } },
    });
    const ranked = new BucketStore({ redis: c, rules, prefix: 't' });
    const now = Date.UTC(2023, 4, 3, 12); // 2023-123
    expect(keySlot(ranked.keys.topHistory)).not.toBe(SLOT);
    await recordTopHistory(c, ranked.keys.topHistory, 100, now);
    const rows = new Map([
      ['S#visitor#V1', new Map([['2023-123|v', 3n]])],
      ['S#visitor#V2', new Map([['2023-123|v', 1n]])],
    ]);
    await ranked.apply('S', 'a', rows, { now, dedupeTtlSeconds: 60 });
    await new BucketEraser({ redis: c, buckets: ranked }).eraseRow('S', 'S#visitor#V1', { until: now + 10_000, ttlSeconds: 60, now });
    expect(await ranked.top('S', 'visitor', 'v', ['2023-123'], 10)).toEqual([{ member: 'V2', score: 1 }]);
  }, 120_000);
});
