// `npx tsx tools/bench/src/aof-window.ts [rounds]`: how often a redis-server with appendfsync everysec loses a write it
// has answered when it is SIGKILLed while a background fsync of its AOF is still running (README "Outages and
// recovery"). Each round: a fresh redis-server (AOF, everysec), a 150 MB write so that the next fsync takes long, a
// wait until INFO says that fsync is under way, one more write (answered OK), SIGKILL, a restart on the same AOF.
import { Redis } from 'ioredis';
import { sleep, startRedis } from '@tally/testing';

const rounds = Number(process.argv[2] ?? 8);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a whole number of at least 1, got ${process.argv[2]}`);
const info = async (c: Redis, field: string) => new RegExp(`^${field}:(\\S*)`, 'm').exec(await c.info('persistence'))?.[1];
let lost = 0;
let underway = 0;
for (let round = 1; round <= rounds; round++) {
  const redis = await startRedis({ appendfsync: 'everysec', startTimeoutMs: 60_000 });
  try {
    const before = new Redis(redis.url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
    before.on('error', () => {});
    await before.set('big', 'x'.repeat(150 * 1024 * 1024));
    let pending = false;
    for (let i = 0; i < 400 && !pending; i++) if (!(pending = (await info(before, 'aof_pending_bio_fsync')) === '1')) await sleep(5);
    if (pending) underway++;
    await before.set('marker', String(round));
    await redis.kill('SIGKILL');
    before.disconnect();
    await redis.restart();
    const after = new Redis(redis.url);
    const [marker, big] = [await after.get('marker'), await after.strlen('big')];
    after.disconnect();
    if (marker !== String(round)) lost++;
    console.log(
      `round ${round}: fsync under way ${pending}; after the restart the answered write is ${marker === String(round) ? 'there' : 'gone'}, the 150 MB value ${big > 0 ? 'there' : 'gone'}`,
    );
  } finally {
    await redis.stop();
  }
}
console.log(
  `appendfsync everysec: a SIGKILL during a background fsync lost the write answered just before it in ${lost} of ${rounds} rounds (the fsync was seen under way in ${underway})`,
);
