import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

// A Worker made while its Redis Cluster is not reachable (the app starts before the cluster, a full cluster restart).
// Its connection (libs/queues clusterWorkerConnection) must not be lazy: BullMQ (6.7.6) calls `connect()` itself on
// a connection that has not started, the first connect() rejects "None of startup nodes is available", and BullMQ
// keeps that rejected promise as the connection's client for good; that message is not one of BullMQ's connection
// errors, so the main loop's retryIfFailed emits 'error' and retries at once, with no delay: a microtask loop that
// never yields, and the process's timers, HTTP server and SIGTERM handler never run. Each case runs in a child process
// (such a loop would starve this one): the Worker on a Cluster whose only seed is a port nobody listens on, and a 3 s
// timer that must print. Both the app's Cluster as it is (its ready check on: the Worker gets the connection without
// it) and one without the check (passed on as it is).

const workers = fileURLToPath(new URL('./workers.ts', import.meta.url));
const ioredis = fileURLToPath(new URL('../../../node_modules/ioredis/built/index.js', import.meta.url));
// node itself with tsx's loader (not the tsx wrapper, whose child would outlive a SIGKILL of the wrapper).
const tsxLoader = new URL('../../../node_modules/tsx/dist/loader.mjs', import.meta.url).href;

const script = (readyCheck: boolean) => `
  const { Cluster } = require(${JSON.stringify(ioredis)});
  const { shardWorker } = require(${JSON.stringify(workers)});
  const c = new Cluster([{ host: '127.0.0.1', port: 1 }], {
    enableReadyCheck: ${readyCheck}, clusterRetryStrategy: (t) => Math.min(100 * t, 2000),
    redisOptions: { maxRetriesPerRequest: null },
  });
  c.on('error', () => undefined);
  let errors = 0;
  const w = shardWorker('seal', async () => undefined, '{h:seal:0}', { connection: c, concurrency: 1, lockMs: 30000 });
  w.on('error', () => void errors++);
  setTimeout(() => { console.log(JSON.stringify({ timerFired: true, errors })); process.exit(0); }, 3000);
`;

async function timerFires(readyCheck: boolean): Promise<boolean> {
  const out = await promisify(execFile)(process.execPath, ['--import', tsxLoader, '--input-type=commonjs', '--eval', script(readyCheck)], {
    timeout: 45_000,
    killSignal: 'SIGKILL',
  }).then(
    (r) => r.stdout,
    (err: { stdout?: string }) => err.stdout ?? '',
  );
  return out.includes('"timerFired":true');
}

it('a Worker on a Cluster made without the ready check, not reachable at start, leaves the event loop running', async () => {
  expect(await timerFires(false)).toBe(true);
}, 60_000);

it('a Worker on a Cluster with the ready check, not reachable at start, leaves the event loop running', async () => {
  expect(await timerFires(true)).toBe(true);
}, 60_000);
