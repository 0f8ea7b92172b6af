/**
 * `npm start`: the whole of Tally on one machine. Starts redis-server (unless REDIS_URL or REDIS_CLUSTER_NODES) and dynalite
 * (unless DYNAMODB_ENDPOINT), creates the table, runs the four apps under a supervisor, prints their URLs,
 * and on Ctrl-C / SIGTERM stops the apps, then the stores, leaving no process behind.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '@tally/config';
import { isHealthy, startDynalite, startRedis, waitFor } from '@tally/testing';
import { APPS, appProcessSpec, type Backends } from './apps';
import { loadStackConfig, type StackConfig } from './config';
import { afterStart, type StackContext } from './demo';
import { ensureTallyTable } from './dynalite';
import { StackError } from './errors';
import { Lifecycle } from './lifecycle';
import { formatBare, lineFormatter, type Level } from './log-lines';
import { choosePort } from './ports';
import { redisServerVersion } from './redis-server';
import { RunFile } from './run-file';
import { Supervisor, type CrashReport, type SupervisorHooks } from './supervisor';

const LEVEL_RANK: Record<Level | 'silent', number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: 100 };
const REDIS_START_TIMEOUT_MS = 15_000;

let config: StackConfig;
try {
  config = loadStackConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`tally: configuration error: ${err.message}\n`);
  process.exit(1);
}
const { env, dataDir, repoRoot } = config;

// ---- output -------------------------------------------------------------------------------------
process.stdout.on('error', () => {}); // `npm start | head` closing the pipe must not crash the stack
const nameWidth = Math.max('redis'.length, ...APPS.map((a) => a.name.length));
const format = lineFormatter({ color: Boolean(process.stdout.isTTY) && env.NO_COLOR === undefined, nameWidth });
const print = (text: string) => process.stdout.write(text + '\n');
const say = (msg: string, level: Level = 'info') => {
  if (LEVEL_RANK[level] < LEVEL_RANK[env.LOG_LEVEL]) return;
  print(format.say('stack', level, msg));
};
/** A path as the user would type it: relative below the current directory, else absolute. */
const shortPath = (p: string) => {
  const rel = path.relative(process.cwd(), p);
  return rel === '' ? '.' : rel.startsWith('..') || path.isAbsolute(rel) ? p : rel;
};

// ---- shutdown -----------------------------------------------------------------------------------
const lifecycle = new Lifecycle((name, err) => say(`stopping ${name} failed: ${(err as Error).message}`, 'warn'));
const runFile = new RunFile(dataDir);
let runFileClaimed = false;
let startup: Promise<void> = Promise.resolve();
let shutdownStartedAt: number | undefined;
let toldStillStopping = false;

async function shutdown(reason: string, exitCode: number, quiet = false): Promise<void> {
  if (shutdownStartedAt !== undefined) {
    // npm and tsx relay the terminal's Ctrl-C, so one keypress arrives several times: only a later one is news.
    if (!toldStillStopping && Date.now() - shutdownStartedAt > 1_000) {
      toldStillStopping = true;
      say(`${reason}: still stopping (each process gets ${env.STACK_STOP_TIMEOUT_MS} ms after SIGTERM before SIGKILL)`);
    }
    return;
  }
  shutdownStartedAt = Date.now();
  const anything = lifecycle.size > 0;
  if (!quiet && anything) say(`${reason}: stopping`);
  await lifecycle.stop();
  await startup.catch(() => {});
  await lifecycle.stop(); // whatever start-up added after stopping began
  if (runFileClaimed) runFile.remove();
  if (!quiet && anything) say('stopped');
  process.exit(exitCode);
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => void shutdown(`received ${signal}`, 0));
}
// Process warnings as one readable line instead of a paragraph on stderr.
process.removeAllListeners('warning');
process.on('warning', (w) => say(`${w.name}: ${w.message.split('\n').filter(Boolean).join(' ')}`, 'warn'));
process.on('uncaughtException', (err) => {
  say(err.stack ?? String(err), 'fatal');
  void shutdown('unexpected error', 1);
});
process.on('unhandledRejection', (err) => {
  say(err instanceof Error ? (err.stack ?? err.message) : String(err), 'fatal');
  void shutdown('unexpected error', 1);
});

// ---- supervision --------------------------------------------------------------------------------
function reportCrash(r: CrashReport): void {
  const how = r.error ? `could not start (${r.error.message})` : r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`;
  const lines = r.lastLines.slice(-15);
  say(`${r.name} ${how} after ${(r.uptimeMs / 1000).toFixed(1)} s${lines.length ? '; its last lines:' : ''}`, 'error');
  for (const line of lines) print(formatBare(line).replace(/^/gm, '    > '));
  say(`restarting ${r.name} in ${(r.restartInMs / 1000).toFixed(1)} s (crash ${r.attempt} in a row)`, 'warn');
}

function hooks(match: string): SupervisorHooks {
  return {
    onLine: (name, line) => print(format.line(name, line)),
    onSpawn: (name, pid) => {
      runFile.setChild(name, pid, match);
      say(`started ${name} (pid ${pid})`, 'debug');
    },
    onCrash: reportCrash,
  };
}

const supervisorOptions = { stopTimeoutMs: env.STACK_STOP_TIMEOUT_MS, tailLines: 30 };

// ---- start-up -----------------------------------------------------------------------------------
async function startRedisServer(version: string): Promise<{ url: string; port?: number; note: string }> {
  const redisDir = path.join(dataDir, 'redis');
  mkdirSync(redisDir, { recursive: true });
  const redis = await startRedis({
    dir: redisDir,
    args: ['--loglevel', 'warning'],
    startTimeoutMs: REDIS_START_TIMEOUT_MS,
    stopTimeoutMs: env.STACK_STOP_TIMEOUT_MS,
    reap: false, // a stack that dies leaves it to the next start (run-file.ts), which stops it gently
    onLine: (line) => print(format.line('redis', line)),
  }).catch((err: Error) => {
    throw new StackError('TALLY_ERR_REDIS_START', err.message);
  });
  runFile.setChild('redis', redis.pid, 'redis-server');
  // SIGTERM makes redis-server shut down like SHUTDOWN: the AOF is flushed and fsynced first.
  lifecycle.add('redis-server', () => redis.stop());
  return { url: redis.url, port: redis.port, note: `redis-server ${version}, AOF in ${shortPath(redisDir)}` };
}

async function startDynamo(): Promise<{ endpoint: string; port?: number; note: string }> {
  if (env.DYNAMODB_ENDPOINT) return { endpoint: env.DYNAMODB_ENDPOINT, note: 'from DYNAMODB_ENDPOINT' };
  const dynamoDir = path.join(dataDir, 'dynamo');
  mkdirSync(dynamoDir, { recursive: true });
  const dynalite = await startDynalite({ path: dynamoDir }).catch((err: Error) => {
    throw new StackError('TALLY_ERR_DYNAMO_START', `dynalite could not start on ${shortPath(dynamoDir)}: ${err.message}`);
  });
  lifecycle.add('dynalite', () => dynalite.kill()); // kill: also drops idle keep-alive connections
  return { endpoint: dynalite.endpoint, port: dynalite.port, note: `dynalite in this process, files in ${shortPath(dynamoDir)}` };
}

async function start(): Promise<void> {
  mkdirSync(dataDir, { recursive: true });
  // Before anything else, the commonest missing piece: one clear line and exit 1 when it is not installed.
  const cluster = env.REDIS_CLUSTER_NODES;
  const redisVersion = env.REDIS_URL || cluster ? undefined : await redisServerVersion();
  for (const note of await runFile.claim()) say(note, 'warn');
  runFileClaimed = true;

  const redis =
    redisVersion !== undefined
      ? await startRedisServer(redisVersion)
      : cluster
        ? { url: env.REDIS_URL ?? `redis://${cluster.split(',')[0]}`, note: `Redis Cluster from REDIS_CLUSTER_NODES=${cluster}` }
        : { url: env.REDIS_URL!, note: 'from REDIS_URL' };
  if (lifecycle.isStopping) return;
  say(`redis ready at ${redis.url} (${redis.note})`);

  const dynamo = await startDynamo();
  if (lifecycle.isStopping) return;
  const created = await ensureTallyTable(dynamo.endpoint, env.AWS_REGION, env.DYNAMODB_TABLE);
  say(`dynamodb ready at ${dynamo.endpoint} (${dynamo.note}); table ${env.DYNAMODB_TABLE} ${created ? 'created' : 'exists'}`);
  if (lifecycle.isStopping) return;

  const reserved = new Set<number>([redis.port, dynamo.port].filter((p): p is number => p !== undefined));
  const ports = new Map<string, number>();
  for (const app of APPS) {
    const choice = await choosePort(app.name, app.defaultPort, env[app.portVariable], app.portVariable, reserved);
    if (choice.note) say(choice.note, 'warn');
    reserved.add(choice.port);
    ports.set(app.name, choice.port);
  }
  if (lifecycle.isStopping) return;

  const backends: Backends = {
    redisUrl: redis.url,
    dynamoEndpoint: dynamo.endpoint,
    table: env.DYNAMODB_TABLE,
    region: env.AWS_REGION,
    logLevel: env.LOG_LEVEL,
  };
  runFile.setBackends({
    redisUrl: backends.redisUrl,
    dynamoEndpoint: backends.dynamoEndpoint,
    table: backends.table,
    region: backends.region,
  });
  const apps = APPS.map(
    (app) =>
      new Supervisor(
        appProcessSpec(app, ports.get(app.name)!, backends, config.childBaseEnv, repoRoot),
        hooks(`apps/${app.name}/src/main.ts`),
        supervisorOptions,
      ),
  );
  lifecycle.add('apps', async () => {
    const outcomes = await Promise.all(apps.map((a) => a.stop()));
    outcomes.forEach((o, i) => {
      if (o === 'killed') say(`${apps[i]!.name} did not stop within ${env.STACK_STOP_TIMEOUT_MS} ms; killed`, 'warn');
    });
  });
  for (const app of apps) app.start();

  const urls = Object.fromEntries(APPS.map((a) => [a.name, `http://127.0.0.1:${ports.get(a.name)}`])) as StackContext['urls'];
  const healthy = await Promise.all(
    APPS.map((a) =>
      waitFor(async () => lifecycle.isStopping || (await isHealthy(`${urls[a.name]}/healthz`)), {
        timeoutMs: env.STACK_START_TIMEOUT_MS,
        intervalMs: 200,
      }).then(
        () => true,
        () => false,
      ),
    ),
  );
  if (lifecycle.isStopping) return;

  const pad = (s: string) => s.padEnd(nameWidth + 2);
  const mark = (i: number) => (healthy[i] ? '' : '   (not healthy yet: see its log; it keeps being restarted)');
  print('');
  print(
    healthy.every(Boolean) ? 'Tally is running. Ctrl-C stops it.' : 'Tally started, but not every app is healthy yet. Ctrl-C stops it.',
  );
  print(`  ${pad('collector')}${urls.collector}   POST /v1/events${mark(0)}`);
  print(`  ${pad('query-api')}${urls['query-api']}   dashboard ${urls['query-api']}/${mark(1)}`);
  print(`  ${pad('bucket-aggregator')}${urls['bucket-aggregator']}${mark(2)}`);
  print(`  ${pad('dynamo-writer')}${urls['dynamo-writer']}${mark(3)}`);
  print(`  ${pad('metrics')}${APPS.map((a) => `${urls[a.name]}/metrics`).join('  ')}`);
  print(`  ${pad('health')}/healthz and /readyz on each app`);
  print(`  ${pad('redis')}${redis.url}   (${redis.note})`);
  print(`  ${pad('dynamodb')}${dynamo.endpoint}   table ${env.DYNAMODB_TABLE} (${dynamo.note})`);
  print('');

  await afterStart({
    urls,
    redisUrl: redis.url,
    dynamoEndpoint: dynamo.endpoint,
    table: env.DYNAMODB_TABLE,
    region: env.AWS_REGION,
    dataDir,
    log: (message) => print(message),
  });
}

startup = start().catch((err: unknown) => {
  if (lifecycle.isStopping) return; // failures caused by stopping half-way are not news
  const code = (err as { code?: unknown }).code;
  if (err instanceof StackError || (typeof code === 'string' && code.startsWith('TALLY_ERR_'))) {
    process.stderr.write(`tally: ${(err as Error).message}\n`);
  } else {
    process.stderr.write(`tally: start-up failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  }
  void shutdown('start-up failed', 1, true);
});
