import type { Job, Processor, Queue, Worker } from 'bullmq';
import { EventEmitter } from 'node:events';

/**
 * How long (ms) a due job of a watched queue may go untaken while its Worker runs with no job in flight before the
 * Worker counts as stranded. An idle, healthy Worker takes a due job within milliseconds: it blocks on BZPOPMIN until
 * the next job is due. What can hold it back is its connections coming back after Redis did (the check reads Redis
 * too, so time with Redis away does not count): BullMQ's own watchdog ends a blocking wait that outlives its timeout
 * (at most 10 s) by 1 s, and ioredis reconnects within 2 s (clusterRetryStrategy, connection.ts): some 13 s at worst.
 * Measured: in `scheduler-failover.cluster.int.test.ts` the seal queue's first ticks after each of six failovers ran 3
 * to 9.5 s after they were due, the failover itself included (cluster-node-timeout 2 s there). Twice the 13 s,
 * rounded up. Not a multiple of BUCKET_SECONDS: neither how soon a Worker takes a due job nor what a restart costs
 * depends on it (one tick that waited 30 s more is a bucket sealed 30 s late).
 */
export const STRANDED_AFTER_MS = 30_000;

/** How long a restart waits for the stranded Worker to close before it goes on (it is closed by force). */
const CLOSE_WAIT_MS = 5_000;

/** Due jobs a check reads per state (the oldest: the ones that waited longest). */
const LOOKED_AT = 10;

/** The delayed set's score of a job due at `ms`: BullMQ's `ms * 0x1000 + n` (n < 0x1000, getDelayedScore.lua). */
const lastScoreOf = (ms: number) => (ms + 1) * 0x1000 - 1;

/** A queue's Redis connection as the checks use it: ioredis behind BullMQ's adapter, which passes these on as they are. */
interface WatchClient {
  lrange(key: string, start: number, stop: number): Promise<string[]>;
  zrangebyscore(key: string, min: string, max: string, limit: 'LIMIT', offset: number, count: number): Promise<string[]>;
}

export interface WorkerWatchdogOptions {
  /**
   * The queue shard the Workers serve, on the app's own connection (not on a Worker's): the checks read its due
   * jobs (waiting, prioritized, and delayed ones whose time has come) with it.
   */
  queue: Queue;
  /** Makes a Worker of that queue shard running `processor` (shardWorker), at the start and after each restart. */
  start: (processor: Processor) => Worker;
  /** The jobs' processor; the watchdog counts the jobs in flight through it. */
  processor: Processor;
  /** STRANDED_AFTER_MS unless said (tests). */
  strandedAfterMs?: number;
  log: { warn(obj: object, msg: string): void };
  /** The checks' clock (epoch ms). Default Date.now. */
  now?: () => number;
  /** Called at each restart (a metric). */
  onRestart?: () => void;
}

/**
 * A BullMQ Worker watched for being stranded: running, nothing in flight, and yet taking no job while one is due. A
 * Worker waits for jobs on a blocking connection of its own, and a failover can leave that wait hanging for good with
 * no error (workers.ts says how ioredis' cluster ready check did; BullMQ's issues list more), while `isRunning()`
 * stays true. Producers' queues then show a growing depth; a job scheduler's queue (the sealer's) shows nothing, its
 * next job just stays delayed past due. Each check (`start`: every sixth of the bound) reads the queue's oldest due
 * jobs, at most LOOKED_AT per state (one LRANGE and two sorted-set reads, one slot), and remembers since when it has
 * seen each one due at every check; a job not seen at a check is forgotten. When one has been seen due for
 * `strandedAfterMs` (STRANDED_AFTER_MS) while the Worker ran with no job in flight (counted from the later of its
 * first sighting and the Worker's last job's end), the Worker is closed by force, its blocking connection with it,
 * and a new one started; it is logged (warn) and counted (onRestart). A job seen only after Redis came back, or
 * after the Worker was busy, gets the whole bound again. `isRunning()` (the app's /readyz) says false from then until
 * the new Worker takes a job or a check finds none due. It stands for its Workers in the app's `serve`: their `failed`
 * and `error` events are its own, and `close` stops the checks and closes the Worker. With several replicas, one whose
 * Worker is stranded while another takes the jobs is not seen (the jobs are not left waiting).
 */
export class WorkerWatchdog extends EventEmitter {
  readonly name: string;
  private worker: Worker;
  private readonly now: () => number;
  private readonly strandedAfterMs: number;
  /** When each due job was first seen due, by the checks that have seen it at each one since. */
  private readonly seen = new Map<string, number>();
  private inFlight = 0;
  private idleSince: number;
  private stranded = false;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: WorkerWatchdogOptions) {
    super();
    this.name = opts.queue.name;
    this.now = opts.now ?? Date.now;
    this.strandedAfterMs = opts.strandedAfterMs ?? STRANDED_AFTER_MS;
    this.idleSince = this.now();
    this.worker = this.startWorker();
  }

  /** The Worker running now. */
  get current(): Worker {
    return this.worker;
  }

  /** The Worker runs and is not stranded (see the class). */
  isRunning(): boolean {
    return !this.stranded && this.worker.isRunning();
  }

  /** Looks for a due job left waiting, and restarts the Worker when it is stranded. One at a time. */
  check(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.running ??= this.run().finally(() => (this.running = undefined));
    return this.running;
  }

  /** A check every `everyMs` (the process's timers do not wait for them); errors are logged. */
  start(everyMs = this.strandedAfterMs / 6): void {
    const tick = () =>
      void this.check().catch((err: unknown) =>
        this.opts.log.warn({ err, queue: this.name }, 'worker watchdog: due jobs not read (tried again at the next check)'),
      );
    this.timer ??= setInterval(tick, everyMs).unref();
  }

  /** Stops the checks and closes the Worker (`force`: without waiting for its active jobs). */
  async close(force = false): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.worker.close(force);
  }

  private startWorker(): Worker {
    const processor = this.opts.processor;
    const worker = this.opts.start(async (job: Job, token?: string, signal?: AbortSignal) => {
      this.inFlight++;
      try {
        return await processor(job, token, signal);
      } finally {
        if (--this.inFlight === 0) this.idleSince = this.now();
      }
    });
    worker.on('active', () => {
      if (worker === this.worker) this.stranded = false;
    });
    worker.on('failed', (job, err, prev) => void this.emit('failed', job, err, prev));
    // An 'error' nobody listens to would throw.
    worker.on('error', (err) => void (this.listenerCount('error') > 0 && this.emit('error', err)));
    return worker;
  }

  private async run(): Promise<void> {
    const now = this.now();
    const due = await this.dueJobs(now).catch((err: unknown) => {
      // Redis away: the Worker cannot take jobs either. The jobs are seen afresh once it answers again.
      this.seen.clear();
      throw err;
    });
    for (const id of this.seen.keys()) if (!due.has(id)) this.seen.delete(id);
    for (const id of due) if (!this.seen.has(id)) this.seen.set(id, now);
    if (due.size === 0) this.stranded = false;
    if (this.closed || this.inFlight > 0) return;
    // A Worker not running yet (its Redis not there) has not had its chance: the bound counts from when it runs.
    if (!this.worker.isRunning()) {
      this.idleSince = now;
      return;
    }
    let oldest: { id: string; since: number } | undefined;
    for (const [id, firstSeen] of this.seen) {
      const since = Math.max(firstSeen, this.idleSince);
      if (!oldest || since < oldest.since) oldest = { id, since };
    }
    if (oldest && now - oldest.since >= this.strandedAfterMs) await this.restart(oldest.id, now - oldest.since);
  }

  /** The ids of the queue's oldest due jobs: waiting, prioritized, and delayed ones due by `now`. */
  private async dueJobs(now: number): Promise<Set<string>> {
    const { queue } = this.opts;
    const client = (await queue.getBackend().client) as unknown as WatchClient;
    const [waiting, prioritized, delayed] = await Promise.all([
      // The wait list is taken from its tail: the oldest last.
      client.lrange(queue.toKey('wait'), -LOOKED_AT, -1),
      client.zrangebyscore(queue.toKey('prioritized'), '-inf', '+inf', 'LIMIT', 0, LOOKED_AT),
      client.zrangebyscore(queue.toKey('delayed'), '-inf', String(lastScoreOf(now)), 'LIMIT', 0, LOOKED_AT),
    ]);
    return new Set([...waiting, ...prioritized, ...delayed]);
  }

  private async restart(jobId: string, waitedMs: number): Promise<void> {
    const stale = this.worker;
    this.stranded = true;
    this.opts.log.warn(
      { queue: this.name, prefix: this.opts.queue.opts.prefix, jobId, waitedMs, strandedAfterMs: this.strandedAfterMs },
      `${this.name} worker stranded: a due job went untaken while it ran idle; closed by force and started again`,
    );
    this.opts.onRestart?.();
    this.idleSince = this.now();
    this.worker = this.startWorker();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      stale.close(true).catch((err: unknown) => this.opts.log.warn({ err, queue: this.name }, 'stranded worker not closed cleanly')),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS).unref())),
    ]);
    clearTimeout(timer);
  }
}
