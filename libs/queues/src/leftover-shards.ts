import { Queue, type JobType, type Processor, type Worker } from 'bullmq';
import { MAX_QUEUE_SHARDS, queuePrefix, type QueueLayout } from './layout';
import { QUEUE, SHARDED_QUEUES, type QueueName } from './names';
import { allQueues, QUEUE_LAYOUT, queueShards, type TallyQueues } from './queues';
import { QUEUE_SETTINGS } from './settings';
import { shardWorker, type ShardWorkerOptions } from './workers';

/** How long close() waits for a check under way (see close). */
const CLOSE_WAIT_MS = 2_000;
/** How often a process looks for queue shards past QUEUE_SHARDS that hold jobs (ms), by the checks' clock. */
export const LEFTOVER_LOOK_MS = 5 * 60_000;

/** How often the leftover shards found are checked again while they hold jobs to serve or to remove (ms). */
export const LEFTOVER_RECHECK_MS = 30_000;

/** Leftover shards one process serves at once: each is a Worker, with a blocking Redis connection of its own. */
export const MAX_LEFTOVER_WORKERS = 16;

/** Jobs of one state a check removes at most from one leftover shard of a queue whose stranded jobs are redundant. */
const DISCARD_PER_CHECK = 1000;

/** Failed jobs past their queue's retention a look removes at most from one queue shard (oldest first). */
export const FAILED_REMOVED_PER_LOOK = 1000;

/** How long `queue` keeps its failed jobs (ms): its removeOnFail age (QUEUE_SETTINGS), undefined when it has none. */
export function failedRetentionMs(queue: QueueName): number | undefined {
  const keep = QUEUE_SETTINGS[queue].jobs.removeOnFail;
  return typeof keep === 'object' && 'age' in keep ? keep.age * 1000 : undefined;
}

/** The BullMQ keys that hold a queue's jobs, one per state: a shard with none of them holds no job. */
const JOB_KEYS = ['wait', 'delayed', 'prioritized', 'active', 'waiting-children', 'failed', 'completed'] as const;

/** Jobs still to be run (a worker's work; a paused queue's too), as getJobCounts names their states. */
const PENDING_STATES = ['waiting', 'delayed', 'prioritized', 'active', 'waiting-children'] as const satisfies JobType[];
const COUNTED_STATES = [...PENDING_STATES, 'failed', 'completed'] as const satisfies JobType[];

/** The jobs Queue.clean removes from a queue whose stranded jobs are redundant (an active one only without its lock). */
const DISCARDED_STATES = ['wait', 'delayed', 'prioritized', 'active'] as const;

/** A Redis connection as the look for leftover shards uses it (ioredis Redis or Cluster). */
interface ExistsClient {
  exists(...keys: string[]): Promise<number>;
}

/** A queue's Redis connection as the checks use it: the look for leftover shards, and for failed jobs to remove. */
interface QueueClient extends ExistsClient {
  zcount(key: string, min: string, max: number): Promise<number>;
}

/**
 * The Redis connection of a queue: BullMQ's client, ioredis behind BullMQ's adapter (which passes EXISTS and ZCOUNT on
 * as they are).
 */
async function clientOf(queue: Queue): Promise<QueueClient> {
  const client = (await queue.getBackend().client) as unknown as Partial<QueueClient>;
  if (typeof client.exists !== 'function' || typeof client.zcount !== 'function') {
    throw new TypeError(`the Redis client of queue ${queue.name} has no EXISTS or ZCOUNT`);
  }
  return client as QueueClient;
}

/** The BullMQ prefix of any shard of a sharded queue, past QUEUE_SHARDS too (up to its maximum). */
const anyShardPrefix = (layout: QueueLayout, queue: QueueName, shard: number) =>
  queuePrefix({ ...layout, shards: MAX_QUEUE_SHARDS }, queue, shard);

/**
 * The shards of a sharded queue past the layout's QUEUE_SHARDS, up to its maximum (MAX_QUEUE_SHARDS), that hold a job
 * in any state: what lowering QUEUE_SHARDS left. One EXISTS of the shard's job keys each (one slot), all sent at once.
 */
export async function findLeftoverShards(client: ExistsClient, layout: QueueLayout, queue: QueueName): Promise<number[]> {
  if (!SHARDED_QUEUES.has(queue)) return [];
  const shards = Array.from({ length: Math.max(0, MAX_QUEUE_SHARDS - layout.shards) }, (_, i) => layout.shards + i);
  const found = await Promise.all(
    shards.map((shard) => {
      const prefix = anyShardPrefix(layout, queue, shard);
      return client.exists(...JOB_KEYS.map((state) => `${prefix}:${queue}:${state}`));
    }),
  );
  return shards.filter((_, i) => found[i]! > 0);
}

/** A Queue of a shard past QUEUE_SHARDS, on the connection of `base` (a shard of the same queue). */
function leftoverQueue(base: Queue, layout: QueueLayout, queue: QueueName, shard: number): Queue {
  const q = new Queue(queue, {
    connection: base.opts.connection,
    prefix: anyShardPrefix(layout, queue, shard),
    defaultJobOptions: QUEUE_SETTINGS[queue].jobs,
  });
  // The connection's errors are the app's (or the tool's) to report, as for its own queues.
  q.on('error', () => undefined);
  return q;
}

/**
 * The shards of `queue` past the QUEUE_SHARDS that `queues` were made with that hold jobs in any state (a lowered
 * QUEUE_SHARDS left them), each as a Queue on the queues' connection, for the dlq tool to list, replay and purge their
 * failed jobs too. The caller closes them. None for queues not made by createQueues.
 */
export async function leftoverShardQueues(queues: TallyQueues, queue: QueueName): Promise<Queue[]> {
  const layout = queues[QUEUE_LAYOUT];
  if (!layout || !SHARDED_QUEUES.has(queue)) return [];
  const base = queues[queue];
  return (await findLeftoverShards(await clientOf(base), layout, queue)).map((shard) => leftoverQueue(base, layout, queue, shard));
}

/**
 * Every shard of the queues that carry a store's work (`events`, `dynamo-writes`), and a finder of their leftover shards
 * (leftoverShardQueues), for deleting a store's or a visitor's jobs wherever they are.
 */
export function storeWorkQueues(queues: TallyQueues): { queues: Queue[]; leftoverQueues: () => Promise<Queue[]> } {
  const names = [QUEUE.events, QUEUE.dynamoWrites] as const;
  return {
    queues: names.flatMap((name) => queueShards(queues, name)),
    leftoverQueues: async () => (await Promise.all(names.map((name) => leftoverShardQueues(queues, name)))).flat(),
  };
}

/** What a process does with a queue's leftover shards (LeftoverQueueShards). */
type Role = { kind: 'serve'; processor: Processor; worker: ShardWorkerOptions } | { kind: 'discard'; graceMs: number };

interface Leftover {
  queue: QueueName;
  shard: number;
  q: Queue;
  /** The Worker serving it, while it has jobs to run (role serve). */
  worker?: Worker;
  /** Jobs to run at the last check (waiting, delayed, prioritized, active, waiting-children). */
  pending: number;
  /** Failed and completed jobs at the last check. */
  kept: number;
}

export interface LeftoverQueueShardsOptions {
  /** The app's queues (createQueues): their layout and connection. */
  queues: TallyQueues;
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
  /** The checks' clock (epoch ms). Default Date.now. */
  now?: () => number;
  /** Called with each Worker made for a leftover shard before it runs (the app's logs and metrics of its workers). */
  onWorker?: (worker: Worker) => void;
}

/**
 * The shards of the sharded queues (events, dynamo-writes) past QUEUE_SHARDS that still hold jobs, as one process
 * knows them (QUEUE_SHARDS was lowered, or a producer still runs with a higher one): no worker of this QUEUE_SHARDS
 * serves them. They are looked for (findLeftoverShards: one EXISTS per shard up to QUEUE_SHARDS' maximum, all sent
 * at once) at the first check and then every LEFTOVER_LOOK_MS (5 minutes), by the checks' clock; a check costs nothing
 * more in between while none holds jobs to run. A shard found is checked again (its job counts: one call) at each
 * check (`start`: every LEFTOVER_RECHECK_MS) while it holds jobs to run, and then, per queue:
 *
 * - `serve(queue, processor)`: a Worker of its own runs them with the processor, as the shard's worker did (same jobs:
 *   ids, payloads, timestamps, attempts and backoff; its stalled-job check takes back the jobs an old worker left
 *   active), at most MAX_LEFTOVER_WORKERS shards at once, and is closed once the shard has no job to run left (none
 *   waiting, delayed, prioritized or active);
 * - `discard(queue)`: its jobs to run are redundant and removed (Queue.clean; an active one only once its lock has
 *   lapsed), those added or last tried at least `graceMs` ago (default 5 minutes: a producer or worker still on the
 *   old QUEUE_SHARDS, in a rolling restart, keeps its jobs meanwhile), up to 1,000 per state a check;
 * - neither: they are only counted.
 *
 * Failed jobs stay where they are, for the dlq tool (leftoverShardQueues), and a shard holding only those is looked at
 * again only every 5 minutes. Each look that finds shards logs a warning naming them, with their jobs; `counted()`
 * adds their jobs to the queue-depth gauge. A shard whose jobs are all gone is forgotten.
 *
 * Each look also removes the failed jobs past their queue's retention (failedRetentionMs: removeOnFail's age, 14 days)
 * from every shard of every queue, the leftover shards known included: BullMQ trims a failed set by age only when
 * another job of that shard fails, so a shard with no new failure kept its dead letters for ever. A ZCOUNT per shard
 * (all sent at once), then Queue.clean (one script in the shard's slot) only where some are past it, at most
 * FAILED_REMOVED_PER_LOOK a shard, oldest first. Every replica of every worker app does it; the removal is atomic
 * and idempotent, so replicas at it together remove each job once.
 */
export class LeftoverQueueShards {
  private readonly roles = new Map<QueueName, Role>();
  private readonly known = new Map<string, Leftover>();
  private readonly now: () => number;
  private lookedAt: number | undefined;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: LeftoverQueueShardsOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Runs the jobs of `queue`'s leftover shards with `processor` (a Worker per shard, `worker`'s settings). */
  serve(queue: QueueName, processor: Processor, worker: ShardWorkerOptions): this {
    this.roles.set(queue, { kind: 'serve', processor, worker });
    return this;
  }

  /** Removes the jobs to run of `queue`'s leftover shards once added or last tried `graceMs` ago: they are redundant. */
  discard(queue: QueueName, graceMs = LEFTOVER_LOOK_MS): this {
    this.roles.set(queue, { kind: 'discard', graceMs });
    return this;
  }

  /** The leftover shards known, with their jobs at the last check and whether a Worker serves them. */
  shards(): Array<{ queue: QueueName; shard: number; pending: number; kept: number; served: boolean }> {
    return [...this.known.values()].map((l) => ({ queue: l.queue, shard: l.shard, pending: l.pending, kept: l.kept, served: !!l.worker }));
  }

  /**
   * One queue per sharded queue, for queueDepthMetrics (summed with the queue's own shards): the job counts of its
   * leftover shards known, read when asked (none known: zeros, and nothing read).
   */
  counted(): Array<Pick<Queue, 'name' | 'getJobCounts'>> {
    return [...SHARDED_QUEUES].map((name) => ({
      name,
      getJobCounts: async (...types: JobType[]) => {
        const shards = [...this.known.values()].filter((l) => l.queue === name);
        const counts = await Promise.all(shards.map((l) => l.q.getJobCounts(...types)));
        return Object.fromEntries(types.map((t) => [t, counts.reduce((n, c) => n + (c[t] ?? 0), 0)]));
      },
    }));
  }

  /** Looks for leftover shards when it is time, and serves, removes or counts the jobs of those known. One at a time. */
  check(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.running ??= this.run().finally(() => (this.running = undefined));
    return this.running;
  }

  /** A check now, then one every `everyMs` (the process's timers do not wait for them); errors are logged. */
  start(everyMs = LEFTOVER_RECHECK_MS): void {
    const tick = () =>
      void this.check().catch((err: unknown) =>
        this.opts.log.warn({ err }, 'queue shards past QUEUE_SHARDS not looked at (tried again at the next check)'),
      );
    tick();
    this.timer ??= setInterval(tick, everyMs).unref();
  }

  /**
   * Stops the checks and closes the leftover shards' Workers (`force`: without waiting for their active jobs) and queues.
   * A check under way is waited for a few seconds at most: while Redis is unreachable its commands wait in the
   * connection's queue for as long as it lives, and it is closed only after this (it then fails, and is logged).
   */
  async close(force = false): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    if (this.running) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.running.catch(() => undefined),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS).unref())),
      ]);
      clearTimeout(timer);
    }
    const all = [...this.known.values()];
    this.known.clear();
    await Promise.all(all.map(async (l) => (await l.worker?.close(force), await l.q.close())));
  }

  private async run(): Promise<void> {
    const now = this.now();
    // Looked for at the first check, then every LEFTOVER_LOOK_MS (a clock that went back counts as time up).
    const look = this.lookedAt === undefined || now < this.lookedAt || now - this.lookedAt >= LEFTOVER_LOOK_MS;
    const busy = [...this.known.values()].filter((l) => l.worker || l.pending > 0);
    if (!look && busy.length === 0) return;
    const layout = this.opts.queues[QUEUE_LAYOUT];
    if (!layout) return;
    if (look) {
      for (const queue of SHARDED_QUEUES) {
        const base = this.opts.queues[queue];
        for (const shard of await findLeftoverShards(await clientOf(base), layout, queue)) {
          const key = `${queue}:${shard}`;
          if (!this.known.has(key))
            this.known.set(key, { queue, shard, q: leftoverQueue(base, layout, queue, shard), pending: 0, kept: 0 });
        }
      }
      this.lookedAt = now;
    }
    for (const l of look ? [...this.known.values()] : busy) {
      if (this.closed) return;
      await this.update(l);
    }
    if (look) await this.removeExpiredFailed(now);
    if (look && this.known.size > 0) {
      this.opts.log.warn(
        {
          queueShards: layout.shards,
          shards: [...this.known.values()].map((l) => ({
            queue: l.queue,
            shard: l.shard,
            pending: l.pending,
            failedOrCompleted: l.kept,
            handled: this.roles.get(l.queue)?.kind ?? 'counted',
          })),
        },
        'queue shards past QUEUE_SHARDS hold jobs (QUEUE_SHARDS was lowered, or a producer runs with a higher one)',
      );
    }
  }

  /**
   * Removes the failed jobs that finished more than their queue's retention before `now` (the checks' clock) from every
   * queue shard and leftover shard known, up to FAILED_REMOVED_PER_LOOK a shard; the rest go at the next looks. Its
   * errors are logged: the look's other work is done.
   */
  private async removeExpiredFailed(now: number): Promise<void> {
    try {
      const shards = [...allQueues(this.opts.queues), ...[...this.known.values()].map((l) => l.q)].flatMap((q) => {
        const retentionMs = failedRetentionMs(q.name as QueueName);
        return retentionMs === undefined ? [] : [{ q, retentionMs }];
      });
      const expired = await Promise.all(
        shards.map(async ({ q, retentionMs }) => (await clientOf(q)).zcount(q.toKey('failed'), '-inf', now - retentionMs)),
      );
      for (const [i, { q, retentionMs }] of shards.entries()) {
        if (expired[i] === 0 || this.closed) continue;
        // Queue.clean ages jobs by Date.now(): the grace that is the retention by the checks' clock.
        const removed = (await q.clean(retentionMs + Date.now() - now, FAILED_REMOVED_PER_LOOK, 'failed')).length;
        if (removed > 0) this.opts.log.info({ queue: q.name, prefix: q.opts.prefix, removed }, 'failed jobs past their retention removed');
      }
    } catch (err) {
      this.opts.log.warn({ err }, 'failed jobs past their retention not removed (tried again at the next look)');
    }
  }

  /** Reads a leftover shard's jobs and acts on them by its queue's role; forgets it once it holds none. */
  private async update(l: Leftover): Promise<void> {
    const role = this.roles.get(l.queue);
    let counts = await l.q.getJobCounts(...COUNTED_STATES);
    const pending = (c: Record<string, number>) => PENDING_STATES.reduce((n, s) => n + (c[s] ?? 0), 0);
    if (role?.kind === 'discard' && pending(counts) > 0) {
      let removed = 0;
      for (const state of DISCARDED_STATES) removed += (await l.q.clean(role.graceMs, DISCARD_PER_CHECK, state)).length;
      if (removed > 0) {
        this.opts.log.info({ queue: l.queue, shard: l.shard, removed }, 'redundant jobs of a queue shard past QUEUE_SHARDS removed');
        counts = await l.q.getJobCounts(...COUNTED_STATES);
      }
    }
    l.pending = pending(counts);
    l.kept = (counts.failed ?? 0) + (counts.completed ?? 0);
    if (role?.kind === 'serve') {
      const serving = [...this.known.values()].filter((k) => k.worker).length;
      if (l.pending > 0 && !l.worker && serving < MAX_LEFTOVER_WORKERS && !this.closed) {
        l.worker = shardWorker(l.queue, role.processor, anyShardPrefix(this.opts.queues[QUEUE_LAYOUT]!, l.queue, l.shard), role.worker);
        if (this.opts.onWorker) this.opts.onWorker(l.worker);
        else l.worker.on('error', () => undefined);
        this.opts.log.info({ queue: l.queue, shard: l.shard, pending: l.pending }, 'serving a queue shard past QUEUE_SHARDS');
      } else if (l.pending === 0 && l.worker) {
        // Nothing waiting, delayed or active is left: a job added after this count (a producer on the old
        // QUEUE_SHARDS) is found by the next look.
        await l.worker.close();
        l.worker = undefined;
        this.opts.log.info({ queue: l.queue, shard: l.shard }, 'queue shard past QUEUE_SHARDS drained: its worker closed');
      }
    }
    if (l.pending === 0 && l.kept === 0 && !l.worker) {
      this.known.delete(`${l.queue}:${l.shard}`);
      await l.q.close();
    }
  }
}
