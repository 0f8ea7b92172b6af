import {
  checkTable,
  clientSender,
  expectedCounts,
  generateLoad,
  httpSender,
  keysEverywhere,
  loadFleet,
  startFleet,
  waitForDrain,
  everyBucketRules,
  type Fleet,
  type StoreEvents,
} from '@tally/loadgen';
import { ERASED_ATTR } from '@tally/key-layout';
import { QUEUE_NAMES, queueShards } from '@tally/queues';
import { afterAll, describe, expect, it } from 'vitest';

// Deleting a store and erasing a visitor through HTTP against the real fleet while their events still stream in,
// through the collector and through libs/client (whose batches no key revocation stops): nothing is resurrected,
// and the other store's counts stay exact. On one Redis, and on a Redis Cluster with sharded queues.

const OPERATOR = 'operator-e2e-'.padEnd(48, 'k');
const GONE = { id: 'GONE1', timeZone: 'UTC' };
const KEEP = { id: 'KEEP1', timeZone: 'Asia/Kathmandu' };
const fleets: Fleet[] = [];
afterAll(async () => {
  for (const f of fleets.reverse()) await f.stop().catch(() => undefined);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each([
  { name: 'one Redis', clusterMasters: undefined, shards: 1 },
  { name: 'a Redis Cluster', clusterMasters: 3, shards: 2 },
])('on $name', ({ clusterMasters, shards }) => {
  it('deletes a store and erases a visitor while their events stream in: no resurrected data, the other store exact', async () => {
    const fleet = await startFleet({
      stores: [GONE, KEEP],
      rules: everyBucketRules(),
      ...(clusterMasters ? { clusterMasters } : {}),
      queueShards: shards,
      // Keys are cached briefly, as in production: the collector accepts a deleted store's batches for a moment.
      env: { KEY_CACHE_TTL_MS: '500' },
      appEnv: { 'query-api': { ADMIN_OPERATOR_TOKEN: OPERATOR } },
    });
    fleets.push(fleet);
    const api = fleet.app('query-api').url;
    const http = httpSender({ url: fleet.app('collector').url, keyOf: (s) => fleet.keys[s]!.ingest, deadlineMs: 5_000 });
    const client = clientSender(fleet.clientTarget());

    // The store that stays: counted exactly (every accepted event), while the other store is deleted.
    let stop = false;
    const { accepted: keepAccepted, done: keepLoad } = loadFleet(fleet, {
      load: { seed: 7, stores: [KEEP], products: 30, visitors: 40, batchSize: [5, 40], lateShare: 0.1 },
      clientShare: 0.4,
      concurrency: 2,
      shouldStop: () => stop,
    });
    // The store that goes: batches sent until the end, whatever the answers (401 once its keys are gone).
    let goneSent = 0;
    const goneLoad = (async () => {
      const batches = generateLoad({
        seed: 8,
        stores: [GONE],
        products: 30,
        visitors: 40,
        now: () => Date.now(),
        batchSize: [5, 40],
        lateShare: 0.1,
      });
      for (const batch of batches) {
        if (stop) break;
        await Promise.all([http.send(batch), client.send({ ...batch, idempotencyKey: `${batch.idempotencyKey}-c` })]);
        goneSent++;
      }
    })();

    const call = async (method: string, path: string, key: string) => {
      const res = await fetch(api + path, { method, headers: { authorization: `Bearer ${key}` } });
      return { status: res.status, body: (await res.json()) as any };
    };
    // Some of both stores in DynamoDB first.
    await waitUntil(
      async () => goneSent > 20 && keepAccepted.length > 20 && (await itemsOf(fleet, GONE.id)).some((pk) => !pk.startsWith('_')),
    );

    // Erase the busiest visitor of KEEP1 while their events still arrive.
    const visitor = busiestVisitor(keepAccepted);
    const segments = { visitor, segments: [{ name: 'seen', rules: [{ metric: 'ViewCount', range: 'allTime', op: '>=', value: 1 }] }] };
    const erased = await call('DELETE', `/v1/visitors/${visitor}`, fleet.keys[KEEP.id]!.admin);
    expect(erased.status).toBe(200);
    expect(erased.body).toMatchObject({ store: KEEP.id, visitor });
    expect(erased.body.removed.dynamoItems + erased.body.removed.outboxEntries + erased.body.removed.bucketEntries).toBeGreaterThan(0);

    // Delete GONE1 while its events still arrive; a deletion that must wait for running jobs says 503: call again.
    let deleted = await call('DELETE', `/v1/operator/stores/${GONE.id}`, OPERATOR);
    for (let i = 0; deleted.status === 503 && i < 10; i++) deleted = await call('DELETE', `/v1/operator/stores/${GONE.id}`, OPERATOR);
    expect(deleted.status).toBe(200);
    expect(deleted.body.removed.dynamoItems).toBeGreaterThan(0);
    expect(deleted.body.removed.apiKeys).toBe(4);

    await sleep(3_000); // events keep streaming after the deletion: HTTP ones until the key cache expires, queue ones throughout
    stop = true;
    await Promise.all([keepLoad, goneLoad]);
    await Promise.all([http.close(), client.close()]);
    await waitForDrain(fleet, { timeoutMs: 120_000 });

    // Nothing of GONE1 anywhere: no item, no Redis key but its tombstone, no job, no tenant.
    expect(await itemsOf(fleet, GONE.id)).toEqual([]);
    expect(await keysEverywhere(fleet.inspect, `${fleet.prefix}:{${GONE.id}}:*`)).toEqual([`${fleet.prefix}:{${GONE.id}}:x`]);
    for (const name of QUEUE_NAMES) {
      for (const q of queueShards(fleet.queues, name)) {
        const jobs = await q.getJobs(['waiting', 'delayed', 'active', 'failed', 'completed', 'prioritized']);
        expect(jobs.filter((j) => j?.data?.store === GONE.id).map((j) => j.id)).toEqual([]);
        expect(await q.getFailedCount()).toBe(0);
      }
    }
    expect((await call('GET', '/v1/operator/stores', OPERATOR)).body.stores.map((s: { store: string }) => s.store)).toEqual([KEEP.id]);
    expect((await call('GET', '/v1/store', fleet.keys[GONE.id]!.read)).status).toBe(401);

    // KEEP1 exact, but for the erased visitor's row, which holds nothing (their late events were dropped).
    const expected = expectedCounts(keepAccepted, fleet.rules, fleet.zones);
    const visitorPk = fleet.rules.pkOf(KEEP.id, 'visitor', [visitor]);
    expect(expected.has(visitorPk)).toBe(true);
    expected.delete(visitorPk);
    const table = await checkTable(fleet, expected);
    expect(table.samples).toEqual([]);
    expect(table.mismatches).toBe(0);
    const seg = await fetch(`${api}/v1/segments/evaluate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fleet.keys[KEEP.id]!.read}`, 'content-type': 'application/json' },
      body: JSON.stringify(segments),
    });
    expect(((await seg.json()) as any).segments[0]).toMatchObject({ matched: false, rules: [{ actual: 0 }] });
    // Batches of GONE1 did arrive after the deletion, and its tombstone dropped them.
    const metrics = await fleet.app('bucket-aggregator').handle.metrics();
    const dropped = /^tally_batches_dropped_total(?:\{[^}]*\})? (\d+)$/m.exec(metrics);
    expect(dropped?.[0]).toBeDefined();
    expect(Number(dropped![1])).toBeGreaterThan(0);
    expect(fleet.keyLeaks()).toEqual([]);
  }, 400_000);
});

async function itemsOf(fleet: Fleet, store: string): Promise<string[]> {
  const { ScanCommand } = await import('@aws-sdk/client-dynamodb');
  const out = await fleet.dynamo.send(
    new ScanCommand({ TableName: fleet.table, ProjectionExpression: 'pk, sk, #e', ExpressionAttributeNames: { '#e': ERASED_ATTR } }),
  );
  // The store's counter rows, its tenant and keys' listings, and its entry in the tenant index (pk _tenants, sk <store>);
  // not the tombstone items that replace its counter items (no counters, expiring: libs/tenants erasure.ts).
  const mine = (pk: string, sk: string) =>
    pk === store || pk.startsWith(`${store}#`) || pk === `_tenant#${store}` || (pk === '_tenants' && sk === store);
  return (out.Items ?? []).filter((i) => i[ERASED_ATTR] === undefined && mine(i['pk']!.S!, i['sk']!.S!)).map((i) => i['pk']!.S!);
}

function busiestVisitor(accepted: StoreEvents[]): string {
  const counts = new Map<string, number>();
  for (const { events } of accepted)
    for (const e of events) if (e.dims?.['visitor']) counts.set(e.dims['visitor'], (counts.get(e.dims['visitor']) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0]![0];
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(250);
  }
}
