import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createPacer } from './pace';

describe('createPacer', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('lets every request go at once while no limit is known (a generous limit is never met)', async () => {
    const pacer = createPacer();
    const turns = await Promise.all(Array.from({ length: 20 }, () => pacer.turn()));
    expect(turns).toHaveLength(20);
    for (const answered of turns) answered();
    // A Retry-After alone (a 429 without the limit) holds everything for its time, then lets all go again.
    pacer.refused(1_000, undefined);
    const held: number[] = [];
    for (let i = 0; i < 5; i++) void pacer.turn().then(() => held.push(Date.now()));
    await vi.advanceTimersByTimeAsync(999);
    expect(held).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(held).toHaveLength(5);
  });

  it('keeps any window of the API to the limit, however long the answers take and wherever the windows start', async () => {
    const pacer = createPacer();
    const perWindow = 3;
    const windowMs = 1_000;
    pacer.refused(0, { perWindow, windowMs });
    /** When the API counted each request: some time after it was sent, some time before it was answered. */
    const counted: number[] = [];
    const request = async (i: number) => {
      const answered = await pacer.turn();
      await new Promise((resolve) => setTimeout(resolve, (i * 37) % 250));
      counted.push(Date.now());
      await new Promise((resolve) => setTimeout(resolve, (i * 53) % 400));
      answered();
    };
    // Bursts of 7 (the charts and the lists) and single requests (today), 60 in all.
    const all: Promise<void>[] = [];
    for (let i = 0; i < 60; i++) {
      all.push(request(i));
      if (i % 8 === 7) await vi.advanceTimersByTimeAsync(2_500);
    }
    await vi.advanceTimersByTimeAsync(60_000);
    await Promise.all(all);
    expect(counted).toHaveLength(60);
    counted.sort((a, b) => a - b);
    // No `perWindow + 1` of them within any `windowMs`: whichever window the API counts in, it counts at most 3.
    const crowded = counted.slice(perWindow).filter((t, i) => t - counted[i]! < windowMs);
    expect(crowded).toEqual([]);
    // And it goes at the limit's pace, not slower: 60 requests in about 20 windows plus the answers' time.
    expect(counted.at(-1)! - counted[0]!).toBeLessThan((60 / perWindow) * (windowMs + 650));
  });

  it('keeps to a limit an answer told (X-RateLimit-*) from that answer on, in the longest window told', async () => {
    const pacer = createPacer();
    const first = await pacer.turn();
    // The answer of a window's first request: 2 a window, 10 s left (the window's length).
    pacer.told({ perWindow: 2, windowMs: 10_000 });
    first();
    // A later answer tells only the rest of its window: the page keeps to windows of 10 s.
    const second = await pacer.turn();
    pacer.told({ perWindow: 2, windowMs: 3_000 });
    second();
    const sent: number[] = [];
    for (let i = 0; i < 3; i++)
      void pacer.turn().then((answered) => {
        sent.push(Date.now());
        answered();
      });
    const start = Date.now();
    await vi.advanceTimersByTimeAsync(9_999);
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual([start + 10_000, start + 10_000]);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sent).toHaveLength(3);
    // Another limit (the operator changed it): kept to from then on, in the window told with it.
    pacer.told({ perWindow: 5, windowMs: 1_000 });
    const now = Date.now();
    const more: number[] = [];
    for (let i = 0; i < 5; i++) void pacer.turn().then(() => more.push(Date.now()));
    await vi.advanceTimersByTimeAsync(0);
    expect(more).toEqual(Array(4).fill(now)); // the third request of before still counts, until 10 s after its answer
  });

  it('keeps to what an answer told is left of its window (X-RateLimit-Remaining), less the requests on their way', async () => {
    const pacer = createPacer();
    const start = Date.now();
    // Two requests on their way before any limit is known.
    const [a, b] = [await pacer.turn(), await pacer.turn()];
    // a's answer: 5 a window, 3 s left in it, 2 of them left; b may be counted after a, so 1 more may go before the end.
    pacer.told({ perWindow: 5, windowMs: 3_000 }, 2);
    a();
    const sent: number[] = [];
    for (let i = 0; i < 3; i++)
      void pacer.turn().then((answered) => {
        sent.push(Date.now());
        answered();
      });
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toEqual([start]);
    // b's answer comes last but was counted first: it tells more left (3); the least told of the window is kept.
    pacer.told({ perWindow: 5, windowMs: 3_000 }, 3);
    b();
    await vi.advanceTimersByTimeAsync(2_999);
    expect(sent).toEqual([start]);
    // The window told has ended: the rest go, within the limit.
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual([start, start + 3_000, start + 3_000]);
  });

  it('forgets a limit an answer told once one comes without it, but not one only a 429 named', async () => {
    const sentAt = async (pacer: ReturnType<typeof createPacer>) => {
      const sent: number[] = [];
      const all = Array.from({ length: 3 }, () =>
        pacer.turn().then((answered) => {
          sent.push(Date.now());
          answered();
        }),
      );
      await vi.advanceTimersByTimeAsync(5_000);
      await Promise.all(all);
      return sent;
    };
    // An API that sends no X-RateLimit-*: the limit its 429 named is kept.
    const refused = createPacer();
    refused.refused(0, { perWindow: 1, windowMs: 1_000 });
    refused.untold();
    const start = Date.now();
    expect(await sentAt(refused)).toEqual([start, start + 1_000, start + 2_000]);
    // An API that tells it: an answer without it (the limit off, or nothing counted) leaves nothing to keep to.
    const told = createPacer();
    const first = await told.turn();
    told.told({ perWindow: 1, windowMs: 1_000 }, 0);
    first();
    told.untold();
    const now = Date.now();
    expect(await sentAt(told)).toEqual([now, now, now]);
  });

  it("sends today's numbers first, and a refused request before the ones asked after it", async () => {
    const pacer = createPacer();
    pacer.refused(1_000, { perWindow: 1, windowMs: 1_000 });
    const order: string[] = [];
    const ask = (name: string, opts: Parameters<typeof pacer.turn>[0] = {}) =>
      pacer.turn(opts).then((answered) => {
        order.push(name);
        answered();
      });
    const asked = [
      ask('days'),
      ask('top'),
      ask('again', { again: true }),
      ask('today', { first: true }),
      ask('today again', { first: true, again: true }),
    ];
    await vi.advanceTimersByTimeAsync(10_000);
    await Promise.all(asked);
    expect(order).toEqual(['today again', 'today', 'again', 'days', 'top']);
  });

  it('stops waiting when its signal aborts, and gives the turn to the next', async () => {
    const pacer = createPacer();
    pacer.refused(1_000, { perWindow: 1, windowMs: 1_000 });
    const abort = new AbortController();
    const gone = pacer.turn({ signal: abort.signal }).catch((e: unknown) => e);
    let next = false;
    void pacer.turn().then(() => (next = true));
    await vi.advanceTimersByTimeAsync(500);
    abort.abort();
    expect(await gone).toMatchObject({ name: 'AbortError' });
    await vi.advanceTimersByTimeAsync(500);
    expect(next).toBe(true);
    await expect(pacer.turn({ signal: abort.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });
});
