import {
  crashPoints,
  createLogger,
  createMetrics,
  failedJobsCounter,
  installShutdown,
  logEmitterErrors,
  queueDepthMetrics,
  startOpsServer,
  type LogLevel,
  type ShutdownStep,
} from '@tally/observability';
import { loadRulesOrExit } from '@tally/schema';
import type { Job, Worker } from 'bullmq';
import { closeConnection, createRedisConnection, type RedisConnection, type RedisTarget } from './connection';
import { LeftoverQueueShards } from './leftover-shards';
import { allQueues, closeQueues, createQueues } from './queues';

/** The variables every queue-worker app reads (libs/config aggregatorEnv and writerEnv). */
export interface WorkerAppConfig extends RedisTarget {
  LOG_LEVEL: LogLevel;
  RULES_FILE?: string | undefined;
  KEY_PREFIX: string;
  QUEUE_SHARDS: number;
  TALLY_CRASH_POINT?: string | undefined;
  HTTP_HOST: string;
  HTTP_PORT: number;
  JOB_LOCK_MS: number;
  METRICS_TOKEN?: string | undefined;
}

/** How long a worker app's workers get to finish their active jobs on SIGTERM, before the queues and Redis close. */
export const WORKERS_STOP_TIMEOUT_MS = 20_000;

/**
 * The ready check of a worker app: Redis answers a PING on `connection` and every worker of `workers` runs. The
 * connection queues commands while Redis is away (no retry limit) and /readyz gives up on a check after a while: the
 * probes meanwhile share the PING still pending rather than queue one each, to be sent all at once on the reconnect.
 */
export function workerReadyCheck(connection: { ping(): Promise<string> }, workers: ReadonlyArray<Pick<Worker, 'isRunning'>>) {
  let ping: Promise<string> | undefined;
  return async () => {
    ping ??= connection.ping().finally(() => (ping = undefined));
    return (await ping) === 'PONG' && workers.every((w) => w.isRunning());
  };
}

/** What `serve` needs of a worker: a BullMQ Worker, or a WorkerWatchdog, which stands for the Workers it runs in turn. */
export interface ServedWorker {
  readonly name: string;
  on(event: 'failed', listener: (job: Job | undefined, err: Error, prev: string) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  isRunning(): boolean;
  close(force?: boolean): Promise<void>;
}

/**
 * What a queue-worker app (bucket aggregator, DynamoDB writer) starts with: its logger, rollup rules, metrics
 * registry, queue layout, crash points and `redis()`, a new worker-grade connection (no per-command retry limit,
 * as BullMQ workers need). The queues' depth is exported as metrics, the jobs of shards past QUEUE_SHARDS included
 * (`leftovers`: the app says which queues' leftover shards it serves or empties before `serve`, which starts their
 * checks). `serve` starts the ops server and installs the shutdown once the app's workers exist.
 */
export function startWorkerApp<C extends WorkerAppConfig>(name: string, config: C) {
  const log = createLogger({ name, level: config.LOG_LEVEL });
  const rules = loadRulesOrExit(config.RULES_FILE, log);
  const { registry } = createMetrics({ app: name });
  const layout = { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS };
  const connections: RedisConnection[] = [];
  // While Redis is down every connection and queue reports each reconnect: one line per distinct error and 10 s,
  // from the moment each is made (the app may wait on Redis before it serves).
  const redisErrors = logEmitterErrors(log, 'redis', []);
  const redis = () => {
    const connection = createRedisConnection(config, { maxRetriesPerRequest: null });
    connections.push(connection);
    redisErrors.watch([connection]);
    return connection;
  };
  const queues = createQueues(redis(), layout);
  redisErrors.watch(allQueues(queues));
  // The Workers of leftover shards get the logs and metrics of the app's own (once `serve` has set them up).
  let adopt = (w: Worker) => void w.on('error', () => undefined);
  const leftovers = new LeftoverQueueShards({ queues, log, onWorker: (w) => adopt(w) });
  queueDepthMetrics(registry, [...allQueues(queues), ...leftovers.counted()]);
  const worker = { connection: redis(), lockMs: config.JOB_LOCK_MS };

  /**
   * Logs failed jobs and (throttled) worker errors, counts the jobs that land in a failed set (`tally_jobs_failed_total`),
   * serves /metrics and /readyz (Redis answers and every worker of `ready` runs), starts the checks of the shards past
   * QUEUE_SHARDS (`leftovers`, whose Workers are logged and counted alike), and on SIGTERM closes the workers (the
   * leftover shards' too), the queues, the ops server, Redis, then `close`.
   */
  async function serve(opts: { workers: Array<ServedWorker | undefined>; ready: ServedWorker[]; started: object; close: ShutdownStep[] }) {
    const workers = opts.workers.filter((w) => w !== undefined);
    const logFailed = (w: ServedWorker) =>
      w.on('failed', (job, err) => log.error({ queue: w.name, jobId: job?.id, err: err.message }, 'job failed'));
    for (const w of workers) logFailed(w);
    const failed = failedJobsCounter(registry, workers);
    const workerErrors = logEmitterErrors(log, 'worker', workers, { level: 'error' });
    adopt = (w) => {
      logFailed(w);
      // As failedJobsCounter counts: a job once, when it lands in the failed set.
      w.on('failed', (job) => {
        if (!job || job.finishedOn) failed.inc({ queue: w.name });
      });
      workerErrors.watch([w]);
    };
    const ops = await startOpsServer({
      host: config.HTTP_HOST,
      port: config.HTTP_PORT,
      registry,
      log,
      metricsToken: config.METRICS_TOKEN,
      ready: workerReadyCheck(connections[0]!, opts.ready),
    });
    log.info({ port: ops.port, ...opts.started }, `${name} started`);
    leftovers.start();
    installShutdown(log, [
      // With Redis away no active job can complete (its lock lapses and another replica retries it, idempotently),
      // and a graceful close would wait for a Redis that is not there: close at once instead.
      {
        name: 'workers',
        run: () => {
          const force = connections[0]!.status !== 'ready';
          return Promise.all([...workers.map((w) => w.close(force)), leftovers.close(force)]);
        },
        timeoutMs: WORKERS_STOP_TIMEOUT_MS,
      },
      { name: 'queues', run: () => closeQueues(queues) },
      { name: 'ops server', run: () => ops.close() },
      { name: 'redis', run: () => Promise.all(connections.map(closeConnection)) },
      ...opts.close,
    ]);
  }

  return { log, rules, registry, layout, queues, leftovers, redis, worker, crash: crashPoints(config.TALLY_CRASH_POINT), serve };
}
