import { QUEUE_NAMES, queueShards } from '@tally/queues';
import {
  checkQueryApi,
  checkTable,
  DEMO_STORES,
  everyBucketRules,
  expectedCounts,
  loadFleet,
  startFleet,
  waitForDrain,
  type Fleet,
} from '@tally/loadgen';
import { replicaInSync, sleep, startRedis, startRedisWithReplica, startTcpProxy, testRedis, type RedisHandle } from '@tally/testing';
import { describe, expect, it } from 'vitest';

// A Redis failover under load. The apps reach Redis through one address (a TCP proxy here; a virtual IP or a DNS
// name in production) with a master and a replica behind it. Mid-load the replica's link to the master is cut and
// the master goes on alone for 2 s (a partition), then it is SIGKILLed, the replica promoted in its place behind the
// address, and a new replica attached to it. With REDIS_WAIT_REPLICAS=1 on the collector, @tally/client and the
// dynamo-writer, nothing the edge accepted is lost: every DynamoDB cell and query answer is exact. The long run
// (TALLY_CHAOS=long) also runs the same failover without the wait, and shows the accepted events it loses.

const LONG = process.env['TALLY_CHAOS'] === 'long';
const EVENTS = LONG ? 60_000 : 20_000;
const RATE = 1_500;

async function failoverRun(waitReplicas: number) {
  const pair = await startRedisWithReplica({ appendfsync: 'everysec' });
  const proxy = await startTcpProxy(pair.master.port);
  let replica2: RedisHandle | undefined;
  let fleet: Fleet | undefined;
  const log = (line: string) => console.log(`failover (wait ${waitReplicas}): ${line}`);
  try {
    const wait: Record<string, string> = waitReplicas ? { REDIS_WAIT_REPLICAS: String(waitReplicas), REDIS_WAIT_TIMEOUT_MS: '500' } : {};
    fleet = await startFleet({
      stores: DEMO_STORES,
      rules: everyBucketRules(),
      // Every app, the load's client sender and the checks reach Redis through the proxy; the fleet never stops it.
      redis: { ...pair.master, url: proxy.url, port: proxy.port },
      appEnv: { collector: wait, 'dynamo-writer': wait },
    });
    const f = fleet;
    const { stats, accepted, done } = loadFleet(f, {
      load: { seed: 31, products: 200, visitors: 1_000, maxEvents: EVENTS, batchSize: [20, 150], lateShare: 0.1 },
      retry: { deadlineMs: 120_000, maxDelayMs: 500 },
      rate: RATE,
      concurrency: 6,
      duplicateShare: 0.05,
    });

    await sleep(((EVENTS / RATE) * 1_000) / 3);
    const promoted = testRedis(pair.replica.url);
    await promoted.call('REPLICAOF', 'NO', 'ONE'); // the link cut: from here on the master's writes reach no replica
    // Answers to batches the replica got before the cut may still be on their way: count from 200 ms after it.
    await sleep(200);
    const acceptedBefore = stats.accepted;
    await sleep(1_800);
    const acceptedAlone = stats.accepted - acceptedBefore;
    await pair.master.kill('SIGKILL');
    await promoted.config('SET', 'repl-diskless-sync-delay', '0');
    promoted.disconnect();
    proxy.retarget(pair.replica.port);
    replica2 = await startRedis({ args: ['--replicaof', '127.0.0.1', String(pair.replica.port)] });
    await replicaInSync(replica2.url);
    log(`master SIGKILLed after 2 s alone (${acceptedAlone} events accepted in its last 1.8 s); replica promoted, a new one in sync`);

    await done;
    const expected = expectedCounts(accepted, f.rules, f.zones);
    await waitForDrain(f, { timeoutMs: 180_000 });
    const table = await checkTable(f, expected);
    const query = await checkQueryApi(f, f.app('query-api').url, expected);
    const failedJobs: string[] = [];
    for (const name of QUEUE_NAMES)
      for (const q of queueShards(f.queues, name))
        for (const job of await q.getJobs(['failed'], 0, 50)) failedJobs.push(`${name} ${job.id}: ${job.failedReason}`);
    log(
      `sent ${stats.eventsSent}, accepted ${stats.accepted}, retries ${JSON.stringify(stats.retries)}; ` +
        `table cells ${table.cells}, mismatches ${table.mismatches}; query values ${query.compared}, mismatches ${query.mismatches.length}`,
    );
    for (const s of [...table.samples, ...query.mismatches].slice(0, 10)) log(`  ${s}`);
    return { stats, acceptedAlone, table, query, failedJobs };
  } finally {
    await fleet?.stop().catch(() => undefined);
    await proxy.close();
    await replica2?.stop();
    await pair.stop();
  }
}

describe('a Redis failover under load (master partitioned from its replica, SIGKILLed, the replica promoted)', () => {
  it('with REDIS_WAIT_REPLICAS=1, counts every accepted event exactly once', async () => {
    const r = await failoverRun(1);
    expect(r.stats.edgeMismatches).toEqual([]);
    expect(r.stats.gaveUp).toBe(0);
    expect(r.stats.accepted).toBeGreaterThan(EVENTS * 0.9);
    // While the master was alone nothing could be acknowledged: the edge answered 503 and the senders retried.
    expect(r.acceptedAlone).toBe(0);
    expect((r.stats.retries['503'] ?? 0) + (r.stats.retries['ReplicasBehindError'] ?? 0)).toBeGreaterThan(0);
    expect(r.table.samples).toEqual([]);
    expect(r.table.mismatches).toBe(0);
    expect(r.table.cells).toBeGreaterThan(1_000);
    expect(r.query.mismatches).toEqual([]);
    expect(r.failedJobs).toEqual([]);
  }, 300_000);

  it.runIf(LONG)(
    'without the wait, loses events the edge accepted while the master was alone',
    async () => {
      const r = await failoverRun(0);
      expect(r.acceptedAlone).toBeGreaterThan(0);
      expect(r.table.mismatches).toBeGreaterThan(0);
    },
    300_000,
  );
});
