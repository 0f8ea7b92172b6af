import { describe, expect, it, vi } from 'vitest';
import { workerReadyCheck } from './worker-app';

describe('workerReadyCheck', () => {
  it('keeps one PING outstanding: probes while it gets no answer share it, and queue none of their own', async () => {
    // A connection whose Redis is away: the PING waits (offline queue, no retry limit) until it answers.
    let answer: (reply: string) => void = () => {};
    const connection = { ping: vi.fn(() => new Promise<string>((resolve) => (answer = resolve))) };
    const ready = workerReadyCheck(connection, [{ isRunning: () => true }]);

    const probes = Array.from({ length: 5 }, () => ready());
    expect(connection.ping).toHaveBeenCalledTimes(1);
    answer('PONG');
    expect(await Promise.all(probes)).toEqual([true, true, true, true, true]);

    // Once it answered, the next probe asks again.
    connection.ping.mockResolvedValue('PONG');
    expect(await ready()).toBe(true);
    expect(connection.ping).toHaveBeenCalledTimes(2);
  });

  it('is not ready while a worker does not run', async () => {
    expect(await workerReadyCheck({ ping: async () => 'PONG' }, [{ isRunning: () => true }, { isRunning: () => false }])()).toBe(false);
  });
});
