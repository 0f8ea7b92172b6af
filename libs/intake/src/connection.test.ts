import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { waitForReady, type ConnectionState } from './connection';

/** A connection in `status`, whose 'ready' and 'end' the test emits. */
const connection = (status: string) => Object.assign(new EventEmitter(), { status });

afterEach(() => {
  vi.useRealTimers();
});

describe('waitForReady', () => {
  it('shares one pair of listeners among the calls waiting for a connection, however many', async () => {
    const redis = connection('connecting');
    const calls = Array.from({ length: 30 }, () => waitForReady(redis, 60_000));
    expect([redis.listenerCount('ready'), redis.listenerCount('end')]).toEqual([1, 1]);
    redis.status = 'ready';
    redis.emit('ready');
    await Promise.all(calls);
    expect([redis.listenerCount('ready'), redis.listenerCount('end')]).toEqual([0, 0]);
  });

  it('rejects each call after its own timeout, in words, and leaves the shared listeners for the next calls', async () => {
    vi.useFakeTimers();
    const redis = connection('reconnecting');
    const first = waitForReady(redis, 1_000).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(500);
    const second = waitForReady(redis, 1_000).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(500);
    expect(await first).toMatchObject({ message: 'the connection is not ready after 1000 ms (reconnecting)' });
    expect(redis.listenerCount('ready')).toBe(1);
    redis.status = 'ready';
    redis.emit('ready');
    expect(await second).toBeUndefined();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects the calls waiting when the connection ends, and at once when it is not ready and there is no time to wait', async () => {
    const redis = connection('connecting');
    const waiting = waitForReady(redis, 60_000);
    redis.status = 'end';
    redis.emit('end');
    await expect(waiting).rejects.toThrow('the connection was closed');
    expect([redis.listenerCount('ready'), redis.listenerCount('end')]).toEqual([0, 0]);
    await expect(waitForReady(redis, 60_000)).rejects.toThrow('the connection is closed');
    await expect(waitForReady(connection('connect'), 0)).rejects.toThrow('the connection is connected, not ready yet');
    await expect(waitForReady(connection('wait'), 0)).rejects.toThrow('the connection is not connected yet');
  });

  it('rejects a connection that cannot take listeners at once, with no timer left to throw later', async () => {
    vi.useFakeTimers();
    const notAConnection = { status: undefined } as unknown as ConnectionState;
    await expect(waitForReady(notAConnection, 1_000)).rejects.toBeInstanceOf(TypeError);
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(2_000); // the old timer threw `redis.off is not a function` here, uncaught
  });
});
