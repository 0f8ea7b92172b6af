import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { WaitTimeoutError, freePort, sleep, waitFor, withDeadline } from './index';

describe('waitFor', () => {
  it('returns the first truthy value', async () => {
    let n = 0;
    const v = await waitFor(() => (++n >= 3 ? { n } : null), { intervalMs: 1 });
    expect(v).toEqual({ n: 3 });
  });

  it('treats a throw as not yet', async () => {
    let n = 0;
    const v = await waitFor(
      async () => {
        if (++n < 3) throw new Error('not yet');
        return n;
      },
      { intervalMs: 1 },
    );
    expect(v).toBe(3);
  });

  it('times out naming what it waited for and the last value or error', async () => {
    await expect(waitFor(() => 0, { timeoutMs: 50, message: 'the count to be 5' })).rejects.toThrow(
      /^timed out after 50ms waiting for the count to be 5; last value: 0$/,
    );
    const err = await waitFor(
      () => {
        throw new Error('ECONNREFUSED');
      },
      { timeoutMs: 50 },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect((err as Error).message).toBe('timed out after 50ms waiting for condition; last error: ECONNREFUSED');
  });
});

describe('freePort', () => {
  it('returns a port that can be bound', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    await new Promise((resolve) => server.close(resolve));
  });
});

describe('withDeadline', () => {
  it('answers what the work answers, in time', async () => {
    expect(
      await withDeadline(
        sleep(5).then(() => 42),
        1_000,
        'the answer',
      ),
    ).toBe(42);
  });

  it('fails naming the step once the work is late, and passes on its own error', async () => {
    await expect(withDeadline(new Promise(() => {}), 20, 'the stuck step')).rejects.toThrow('the stuck step: not done after 20 ms');
    await expect(withDeadline(Promise.reject(new Error('its own')), 1_000, 'a step')).rejects.toThrow('its own');
  });
});
