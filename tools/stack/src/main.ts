// `npm start`: the whole of Tally on one machine. Starts redis-server (unless REDIS_URL, REDIS_CLUSTER_NODES or
// REDIS_SENTINELS) and dynalite (unless DYNAMODB_ENDPOINT), creates the table, runs the four apps under a supervisor,
// prints their URLs, and on Ctrl-C / SIGTERM stops the apps, then the stores, leaving no process behind.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { loadConfigOrExit } from '@tally/config';
import { createDynamoClient, ensureTable } from '@tally/dynamo';
import { describeRedisTarget } from '@tally/queues';
import { isHealthy, startDynalite, startRedis, waitFor } from '@tally/testing';
import { APPS, appProcessSpec, loadStackConfig } from './config';
import { demoLines } from './demo';
import { Lifecycle } from './lifecycle';
import { formatBare, lineFormatter, PINO_LEVEL, type Level } from './log-lines';
import { LAYOUT, RunFile, shortPath } from './run-file';
import { choosePort, redisServerVersion, StackError } from './stores';
import { keepRunning, supervise, type CrashReport } from './supervisor';

const { env, dataDir, childBaseEnv } = loadStackConfig(process.env, process.cwd(), loadConfigOrExit);

process.stdout.on('error', () => {}); // `npm start | head` closing the pipe must not crash the stack
const nameWidth = Math.max('redis'.length, ...APPS.map((a) => a.name.length));
const format = lineFormatter({ color: Boolean(process.stdout.isTTY) && env.NO_COLOR === undefined, nameWidth });
const print = (text: string) => process.stdout.write(text + '\n');
const say = (msg: string, level: Level = 'info') => {
  if (env.LOG_LEVEL !== 'silent' && PINO_LEVEL[level] >= PINO_LEVEL[env.LOG_LEVEL]) print(format.say('stack', level, msg));
};

const lifecycle = new Lifecycle((name, err) => say(`stopping ${name} failed: ${(err as Error).message}`, 'warn'));
const runFile = new RunFile(dataDir);
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
  const tell = !quiet && lifecycle.size > 0;
  if (tell) say(`${reason}: stopping`);
  await lifecycle.stop();
  await startup.catch(() => {});
  await lifecycle.stop(); // whatever start-up added after stopping began
  runFile.remove();
  if (tell) say('stopped');
  process.exit(exitCode);
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void shutdown(`received ${signal}`, 0));
// Process warnings as one readable line instead of a paragraph on stderr.
process.removeAllListeners('warning');
process.on('warning', (w) => say(`${w.name}: ${w.message.split('\n').filter(Boolean).join(' ')}`, 'warn'));
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (err: unknown) => {
    say(err instanceof Error ? (err.stack ?? err.message) : String(err), 'fatal');
    void shutdown('unexpected error', 1);
  });
}

function reportCrash(r: CrashReport): void {
  const how = r.error ? `could not start (${r.error.message})` : r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`;
  say(`${r.name} ${how} after ${(r.uptimeMs / 1000).toFixed(1)} s${r.lastLines.length ? '; its last lines:' : ''}`, 'error');
  for (const line of r.lastLines) print(formatBare(line).replace(/^/gm, '    > '));
  say(`restarting ${r.name} in ${(r.restartInMs / 1000).toFixed(1)} s (crash ${r.attempt} in a row)`, 'warn');
}

async function startRedisServer(version: string): Promise<{ url: string; port?: number; note: string }> {
  const dir = path.join(dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const redis = await startRedis({
    dir,
    appendfsync: env.REDIS_APPENDFSYNC,
    args: ['--loglevel', 'warning'],
    startTimeoutMs: 15_000,
    stopTimeoutMs: env.STACK_STOP_TIMEOUT_MS,
    reap: false, // a stack that dies leaves it to the next start (run-file.ts), which stops it gently
    onLine: (line) => print(format.line('redis', line)),
  });
  const record = (pid: number) => runFile.update({ children: { redis: { pid, match: 'redis-server' } } });
  record(redis.pid);
  // A redis-server that dies is started again on its port and directory: it replays its AOF, the apps reconnect.
  const watch = keepRunning('redis-server', redis, {
    onCrash: reportCrash,
    onSpawn: (name, pid) => {
      record(pid);
      say(`${name} is back on ${redis.url} (pid ${pid}, its AOF replayed); the apps reconnect by themselves`);
    },
  });
  // SIGTERM makes redis-server shut down like SHUTDOWN: the AOF is flushed and fsynced first.
  lifecycle.add('redis-server', () => watch.stop().then(() => redis.stop()));
  const note = `redis-server ${version}, AOF (appendfsync ${env.REDIS_APPENDFSYNC}) in ${shortPath(dir)}`;
  return { url: redis.url, port: redis.port, note };
}

async function startDynamo(): Promise<{ endpoint: string; port?: number; note: string }> {
  if (env.DYNAMODB_ENDPOINT) return { endpoint: env.DYNAMODB_ENDPOINT, note: 'from DYNAMODB_ENDPOINT' };
  const dir = path.join(dataDir, 'dynamo'); // created by LevelDB; the data directory by the run file's claim
  const dynalite = await startDynalite({ path: dir }).catch((err: Error) => {
    throw new StackError('TALLY_ERR_DYNAMO_START', `dynalite could not start on ${shortPath(dir)}: ${err.message}`);
  });
  lifecycle.add('dynalite', () => dynalite.kill()); // kill: also drops idle keep-alive connections
  return { endpoint: dynalite.endpoint, port: dynalite.port, note: `dynalite in this process, files in ${shortPath(dir)}` };
}

async function start(): Promise<void> {
  // Before anything else, the commonest missing piece: one clear line and exit 1 when it is not installed.
  const [cluster, sentinels] = [env.REDIS_CLUSTER_NODES, env.REDIS_SENTINELS];
  const version = env.REDIS_URL || cluster || sentinels ? undefined : await redisServerVersion();
  for (const note of await runFile.claim()) say(note, 'warn');
  // With Sentinels, REDIS_URL lends only its password and TLS: the apps ask the Sentinels for the master.
  const url = env.REDIS_URL ?? (cluster ? `redis://${cluster.split(',')[0]}` : 'redis://127.0.0.1');
  const redis = version
    ? await startRedisServer(version)
    : cluster
      ? { url, note: `Redis Cluster from REDIS_CLUSTER_NODES=${cluster}` }
      : sentinels
        ? { url, note: `the master ${env.REDIS_SENTINEL_MASTER ?? 'mymaster'} of Redis Sentinels REDIS_SENTINELS=${sentinels}` }
        : { url, note: 'from REDIS_URL' };
  if (lifecycle.isStopping) return;
  // Shown without the password REDIS_URL may hold (the run file keeps it whole, for the tools, readable by its owner only).
  const redisShown = describeRedisTarget({ REDIS_URL: redis.url });
  say(`redis ready at ${redisShown} (${redis.note})`);

  const dynamo = await startDynamo();
  if (lifecycle.isStopping) return;
  const { DYNAMODB_TABLE: table, AWS_REGION: region } = env;
  const db = { dynamo: createDynamoClient({ endpoint: dynamo.endpoint, region }), table };
  lifecycle.add('dynamodb client', async () => db.dynamo.destroy());
  const { created } = await ensureTable(db.dynamo, table, { timeoutMs: 30_000 });
  say(`dynamodb ready at ${dynamo.endpoint} (${dynamo.note}); table ${table} ${created ? 'created' : 'exists'}`);
  if (lifecycle.isStopping) return;

  const reserved = new Set([redis.port, dynamo.port].filter((p) => p !== undefined));
  const ports: Record<string, number> = {};
  for (const app of APPS) {
    const choice = await choosePort(app, env[app.portVariable], reserved);
    if (choice.note) say(choice.note, 'warn');
    reserved.add((ports[app.name] = choice.port));
  }
  const urls = Object.fromEntries(APPS.map((a) => [a.name, `http://127.0.0.1:${ports[a.name]}`]));
  if (lifecycle.isStopping) return;

  const layout = Object.fromEntries(Object.entries(LAYOUT).map(([member, name]) => [member, env[name]]));
  const backends = { redisUrl: redis.url, dynamoEndpoint: dynamo.endpoint, table, region, collectorUrl: urls['collector']! };
  runFile.update({ backends: { ...backends, ...layout } });
  const stackVars = {
    REDIS_URL: redis.url,
    DYNAMODB_ENDPOINT: dynamo.endpoint,
    DYNAMODB_TABLE: table,
    AWS_REGION: region,
    LOG_LEVEL: env.LOG_LEVEL,
  };
  const apps = APPS.map((app) =>
    supervise(appProcessSpec(app.name, childBaseEnv, { ...stackVars, HTTP_PORT: String(ports[app.name]) }), {
      onLine: (name, line) => print(format.line(name, line)),
      onSpawn: (name, pid) => {
        runFile.update({ children: { [name]: { pid, match: `apps/${app.name}/src/main.ts` } } });
        say(`started ${name} (pid ${pid})`, 'debug');
      },
      onCrash: reportCrash,
      stopTimeoutMs: env.STACK_STOP_TIMEOUT_MS,
    }),
  );
  lifecycle.add('apps', async () => {
    for (const [i, outcome] of (await Promise.all(apps.map((a) => a.stop()))).entries())
      if (outcome === 'killed') say(`${APPS[i]!.name} did not stop within ${env.STACK_STOP_TIMEOUT_MS} ms; killed`, 'warn');
  });

  /** Whether each app answered `probe` within `timeoutMs` (true for an app `skip` names, and once stopping began). */
  const answered = (probe: string, timeoutMs: number, skip = (_i: number) => false) =>
    Promise.all(
      APPS.map((a, i) => {
        const up = async () => skip(i) || lifecycle.isStopping || (await isHealthy(`${urls[a.name]}${probe}`));
        return waitFor(up, { timeoutMs, intervalMs: 200 }).catch(() => false);
      }),
    );
  const healthy = await answered('/healthz', env.STACK_START_TIMEOUT_MS);
  // Healthy is only alive: an app that cannot use Redis (down, a wrong password) answers /healthz but not /readyz.
  // One not ready in time is named, and the stack runs on (Redis may come later: the apps wait for it).
  const ready = await answered('/readyz', env.STACK_READY_TIMEOUT_MS, (i) => !healthy[i]);
  if (lifecycle.isStopping) return;

  const note = (i: number) =>
    !healthy[i]
      ? '   (not healthy yet: see its log; it keeps being restarted)'
      : !ready[i]
        ? '   (not ready yet: /readyz is 503, e.g. Redis unreachable or refusing the password; see its log)'
        : '';
  const row = (name: string, text: string, i?: number) => print(`  ${name.padEnd(nameWidth + 2)}${text}${i === undefined ? '' : note(i)}`);
  const state = !healthy.every(Boolean)
    ? 'started, but not every app is healthy yet'
    : !ready.every(Boolean)
      ? 'started, but not every app is ready yet'
      : 'is running';
  print('');
  print(`Tally ${state}. Ctrl-C stops it.`);
  const extra: Record<string, string> = { collector: '   POST /v1/events', 'query-api': `   dashboard ${urls['query-api']}/` };
  APPS.forEach((a, i) => row(a.name, urls[a.name]! + (extra[a.name] ?? ''), i));
  const token = childBaseEnv['METRICS_TOKEN'] ? '   (with Authorization: Bearer $METRICS_TOKEN)' : '';
  row('metrics', APPS.map((a) => `${urls[a.name]}/metrics`).join('  ') + token);
  row('health', '/healthz and /readyz on each app');
  row('redis', `${redisShown}   (${redis.note})`);
  row('dynamodb', `${dynamo.endpoint}   table ${table} (${dynamo.note})`);
  print('');
  for (const line of await demoLines({ collector: urls['collector']!, 'query-api': urls['query-api']! }, db, dataDir)) print(line);
}

startup = start().catch((err: unknown) => {
  if (lifecycle.isStopping) return; // failures caused by stopping half-way are not news
  // A StackError (or a library's TALLY_ERR_ error) says in one line what to do; anything else gets its stack.
  const known = String((err as { code?: unknown }).code).startsWith('TALLY_ERR_');
  process.stderr.write(`tally: ${known ? (err as Error).message : `start-up failed: ${(err as Error).stack ?? String(err)}`}\n`);
  void shutdown('start-up failed', 1, true);
});
