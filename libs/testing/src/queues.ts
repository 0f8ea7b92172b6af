import type { JobType, Queue } from 'bullmq';
import { WaitTimeoutError } from './errors';
import { sleep } from './wait';

export interface WaitForQueuesIdleOptions {
  /** Default 30 s. */
  timeoutMs?: number;
  /** Also wait for delayed jobs (retries in backoff, scheduled jobs). Default false. */
  includeDelayed?: boolean;
  /** Default 50 ms. */
  intervalMs?: number;
}

type CountedQueue = Pick<Queue, 'name' | 'getJobCounts'>;

const BUSY_STATES = ['waiting', 'active', 'prioritized', 'waiting-children'] as const;

/**
 * Resolves once every queue has no waiting, active, prioritized or waiting-children jobs (and no delayed ones
 * with `includeDelayed`) on two consecutive polls, so a job that enqueues a follow-up is not mistaken for quiet.
 * Throws WaitTimeoutError listing the non-zero counts per queue.
 */
export async function waitForQueuesIdle(queues: readonly CountedQueue[], opts: WaitForQueuesIdleOptions = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const intervalMs = opts.intervalMs ?? 50;
  const states: JobType[] = [...BUSY_STATES, ...(opts.includeDelayed ? (['delayed'] as const) : [])];
  const deadline = Date.now() + timeoutMs;
  let quietPolls = 0;
  let busy: string[] = [];
  let lastError: unknown;
  for (;;) {
    try {
      // A queue whose Redis is down may queue the command forever: never poll past the deadline.
      const counts = await beforeDeadline(Promise.all(queues.map((q) => q.getJobCounts(...states))), deadline);
      busy = [];
      counts.forEach((c, i) => {
        const nonZero = states.filter((s) => (c[s] ?? 0) > 0).map((s) => `${s}=${c[s]}`);
        if (nonZero.length > 0) busy.push(`${queues[i]!.name} {${nonZero.join(', ')}}`);
      });
      lastError = undefined;
      quietPolls = busy.length === 0 ? quietPolls + 1 : 0;
      if (quietPolls >= 2) return;
    } catch (err) {
      lastError = err;
      quietPolls = 0;
    }
    if (Date.now() >= deadline) break;
    await sleep(intervalMs);
  }
  const detail = lastError
    ? `last poll failed: ${lastError instanceof Error ? lastError.message : String(lastError)}`
    : busy.length > 0
      ? busy.join('; ')
      : 'idle on only one poll';
  throw new WaitTimeoutError(`queues not idle after ${timeoutMs}ms: ${detail}`, { cause: lastError });
}

function beforeDeadline<T>(work: Promise<T>, deadline: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('getJobCounts did not answer')), Math.max(0, deadline - Date.now()) + 100);
  });
  work.catch(() => {}); // it may still fail after the deadline won
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}
