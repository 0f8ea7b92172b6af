import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { sleep } from '@tally/testing';
import type { Redis } from 'ioredis';

const run = promisify(execFile);

/** Redis used_memory (INFO memory), bytes. */
export async function usedMemory(redis: { info(section: string): Promise<string> }): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
}

/**
 * The fall of used_memory when `drop` runs on a connection of its own, closed after it (so its buffers are freed with
 * it, not counted against the drop); a second before and after, for the server's cron to finish rehashing and resizing
 * its tables.
 */
export async function fallOf(redis: Redis, drop: (conn: Redis) => Promise<unknown>): Promise<number> {
  await sleep(1_000);
  const before = await usedMemory(redis);
  const conn = redis.duplicate();
  await drop(conn);
  await conn.quit();
  await sleep(1_000);
  return before - (await usedMemory(redis));
}

/** Deletes `keys`, 100 a command. */
export async function deleteKeys(conn: Redis, keys: readonly string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 100) await conn.del(...keys.slice(i, i + 100));
}

/** redis-benchmark's requests per second. */
export async function redisBenchmark(args: string[]): Promise<number> {
  const { stdout } = await run('redis-benchmark', args, { timeout: 180_000 });
  const m = /([\d.]+) requests per second/.exec(stdout.replace(/\r/g, '\n'));
  if (!m) throw new Error(`cannot read redis-benchmark output: ${stdout.slice(-200)}`);
  return Number(m[1]);
}

/** The command line of the HINCRBY ceiling, as shown in reports. */
export const hincrbyCommand = (n: number) => `redis-benchmark -q -P 16 -n ${n} -r 100000 hincrby bench:h f:__rand_int__ 1`;

/** Pipelined (-P 16) HINCRBY on 100,000 random fields of one hash: what one redis-server can increment per second. */
export function hincrbyCeiling(port: number, n: number): Promise<number> {
  return redisBenchmark(['-p', String(port), ...hincrbyCommand(n).split(' ').slice(1)]);
}
