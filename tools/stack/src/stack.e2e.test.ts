import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { rawEnv } from '@tally/config';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APPS } from './config';
import { freePort as findFreePort, isAlive, REPO_ROOT as repoRoot, startRedis, startSentinel, testRedis } from '@tally/testing';
import { procCmdline, type RunState } from './run-file';

const MAIN = 'tools/stack/src/main.ts';

interface Started {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `npm start` without npm: the stack as a process, with the stores it starts and nothing inherited. */
function startStack(env: Record<string, string | undefined>): Started {
  const base = rawEnv();
  for (const name of ['REDIS_URL', 'DYNAMODB_ENDPOINT', 'DYNAMODB_TABLE', 'TALLY_DATA_DIR', ...APPS.map((a) => a.portVariable)])
    delete base[name];
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    cwd: repoRoot,
    env: { ...base, NO_COLOR: '1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, out: () => out, err: () => err, exit };
}

async function until<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `npm run <script> -- args` as a user types it: no backend variable set, only the data directory of this test's stack. */
function npmRun(script: string, args: string[], dataDir: string): Promise<{ code: number; out: string; err: string }> {
  const env = rawEnv();
  for (const name of ['REDIS_URL', 'DYNAMODB_ENDPOINT', 'DYNAMODB_TABLE', 'AWS_REGION']) delete env[name];
  return new Promise((resolve) => {
    execFile('npm', ['run', '-s', script, '--', ...args], { cwd: repoRoot, env: { ...env, TALLY_DATA_DIR: dataDir } }, (err, out, errOut) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out, err: errOut }),
    );
  });
}

const readRunFile = (dataDir: string) => JSON.parse(readFileSync(path.join(dataDir, 'stack.json'), 'utf8')) as RunState;

describe('npm start (tools/stack)', () => {
  let dataDir: string;
  let stack: Started | undefined;
  const ports: Record<string, number> = {};
  /** Every child pid the stack reported, so a failed test still cleans up after itself. */
  const pids = new Set<number>();
  const matches = new Map<number, string>();
  const remember = () => {
    if (!existsSync(path.join(dataDir, 'stack.json'))) return;
    for (const c of Object.values(readRunFile(dataDir).children)) {
      pids.add(c.pid);
      matches.set(c.pid, c.match);
    }
  };

  beforeAll(async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'tally-stack-e2e-'));
    for (const app of APPS) ports[app.portVariable] = await findFreePort();
  });

  afterAll(async () => {
    if (stack && stack.child.exitCode === null && stack.child.signalCode === null) {
      stack.child.kill('SIGTERM');
      const exited = await Promise.race([stack.exit.then(() => true), new Promise((r) => setTimeout(() => r(false), 20_000))]);
      if (!exited) stack.child.kill('SIGKILL');
    }
    for (const [pid, match] of matches) {
      if (isAlive(pid) && procCmdline(pid)?.includes(match)) process.kill(pid, 'SIGKILL');
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs redis, dynalite and the four apps, restarts a crashed app and a crashed redis-server, and leaves nothing behind on SIGTERM', async () => {
    const env = Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)]));
    const s = startStack({ ...env, TALLY_DATA_DIR: dataDir, STACK_STOP_TIMEOUT_MS: '5000', STACK_START_TIMEOUT_MS: '60000' });
    stack = s;
    const failed = s.exit.then(({ code }) => {
      throw new Error(`stack exited early with ${code}\n${s.out()}\n${s.err()}`);
    });
    const started = await Promise.race([
      until(
        'the URLs',
        () => {
          const out = s.out();
          // The banner is written line by line: wait for its last row, not only its first line.
          if (!/^ {2}dynamodb /m.test(out)) return false;
          return out.includes('Tally is running.') ? 'all' : out.includes('not every app is healthy') && 'some';
        },
        90_000,
      ),
      failed,
    ]);
    remember();
    expect(started, `not every app answered /healthz:\n${s.out()}`).toBe('all');

    // The printed URLs are the ports we asked for.
    const urls: Record<string, string> = {};
    for (const app of APPS) {
      const m = new RegExp(`^  ${app.name}\\s+(http://127\\.0\\.0\\.1:(\\d+))`, 'm').exec(s.out());
      expect(m, `${app.name} URL in:\n${s.out()}`).not.toBeNull();
      expect(Number(m![2])).toBe(ports[app.portVariable]);
      urls[app.name] = m![1]!;
    }
    expect(s.out()).toContain(`dashboard ${urls['query-api']}/`);

    for (const app of APPS) {
      const health = await fetch(`${urls[app.name]}/healthz`);
      expect(health.status, `${app.name} /healthz`).toBe(200);
      const metrics = await fetch(`${urls[app.name]}/metrics`);
      expect(metrics.status, `${app.name} /metrics`).toBe(200);
      expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(await metrics.text()).toMatch(/^tally_\w+/m);
    }

    // The operator tools find this stack's Redis and DynamoDB through its run file, and say which they use.
    await until('the demo store', () => s.out().includes('Demo store DEMO'));
    const show = await npmRun('tenants', ['show', 'DEMO'], dataDir);
    expect(show, JSON.stringify(show)).toMatchObject({ code: 0 });
    expect(show.out).toMatch(/^store DEMO\ntime zone /);
    const stackRef = `the npm start stack, pid ${s.child.pid}, ${path.join(dataDir, 'stack.json')}`; // outside the repo: shown absolute
    expect(show.err).toContain(`tally: using DynamoDB ${readRunFile(dataDir).backends!.dynamoEndpoint}, table tally (${stackRef})\n`);
    const dlq = await npmRun('dlq', ['list'], dataDir);
    expect(dlq, JSON.stringify(dlq)).toMatchObject({ code: 0 });
    expect(dlq.err).toContain(`tally: using Redis ${readRunFile(dataDir).backends!.redisUrl} (${stackRef})\n`);
    // So does the load generator: the stack's collector and Redis (on a random port), with the demo store's key.
    const { ingestKey } = JSON.parse(readFileSync(path.join(dataDir, 'demo-keys.json'), 'utf8')) as { ingestKey: string };
    const loadArgs = ['--via', 'both', '--stores', 'DEMO:UTC', '--key', `DEMO=${ingestKey}`, '--rate', '20', '--duration', '1', '--quiet'];
    const load = await npmRun('loadgen', loadArgs, dataDir);
    expect(load, JSON.stringify(load)).toMatchObject({ code: 0 });
    expect(load.err).toContain(
      `loadgen: using collector ${urls['collector']} (${stackRef})\n` +
        `loadgen: using Redis ${readRunFile(dataDir).backends!.redisUrl} (${stackRef}), KEY_PREFIX t, QUEUE_SHARDS 1\n`,
    );

    // Every process the stack started, and its stores' files in the data directory we gave it.
    const first = readRunFile(dataDir);
    expect(first.stackPid).toBe(s.child.pid);
    expect(Object.keys(first.children).sort()).toEqual(['bucket-aggregator', 'collector', 'dynamo-writer', 'query-api', 'redis']);
    for (const pid of pids) expect(isAlive(pid)).toBe(true);
    expect(existsSync(path.join(dataDir, 'redis', 'appendonlydir'))).toBe(true);
    expect(existsSync(path.join(dataDir, 'dynamo', 'CURRENT'))).toBe(true);

    // A crashed app is reported and started again.
    const crashed = first.children['collector']!.pid;
    process.kill(crashed, 'SIGKILL');
    await until('the collector restarted', () => readRunFile(dataDir).children['collector']!.pid !== crashed);
    remember();
    expect(s.out()).toMatch(/collector was killed by SIGKILL after [\d.]+ s; its last lines:/);
    expect(s.out()).toMatch(/restarting collector in 0\.5 s \(crash 1 in a row\)/);
    await until(
      'the new collector healthy',
      async () => (await fetch(`${urls['collector']}/healthz`).catch(() => undefined))?.status === 200,
    );

    // A redis-server that dies is started again on its port and directory: what it held is still there (its AOF
    // replayed), and the apps carry on without a restart of their own.
    const { readKey } = JSON.parse(readFileSync(path.join(dataDir, 'demo-keys.json'), 'utf8')) as { readKey: string };
    const views = async () => {
      const q = '/v1/series?entity=product%3AP_REDIS_CRASH&metrics=ViewCount&range=allTime&granularity=total';
      const res = await fetch(urls['query-api'] + q, { headers: { authorization: `Bearer ${readKey}` } }).catch(() => undefined);
      return res?.ok ? ((await res.json()) as { totals: { ViewCount: number } }).totals.ViewCount : undefined;
    };
    const sendView = async () => {
      const event = { type: 'view', ts: Date.now(), dims: { product: 'P_REDIS_CRASH', visitor: 'V1' } };
      const headers = { authorization: `Bearer ${ingestKey}`, 'content-type': 'application/json' };
      const res = await fetch(`${urls['collector']}/v1/events`, { method: 'POST', headers, body: JSON.stringify([event]) });
      expect(res.status, await res.text()).toBe(202);
    };
    await sendView();
    await until('the view counted', async () => (await views()) === 1);
    // The stack's Redis runs appendfsync always: it fsyncs a write before answering it, so the SIGKILL right after
    // the view was counted cannot take it back (README "Outages and recovery"), with no wait for the AOF.
    const appendfsync = await new Promise<string>((resolve, reject) =>
      execFile('redis-cli', ['-u', readRunFile(dataDir).backends!.redisUrl, 'config', 'get', 'appendfsync'], (err, out) =>
        err ? reject(err) : resolve(out.trim().split('\n')[1] ?? ''),
      ),
    );
    expect(appendfsync).toBe('always');
    const redisBefore = readRunFile(dataDir).children['redis']!.pid;
    const appPids = () => APPS.map((a) => readRunFile(dataDir).children[a.name]!.pid);
    const appsBefore = appPids();
    process.kill(redisBefore, 'SIGKILL');
    await until('redis-server restarted', () => readRunFile(dataDir).children['redis']!.pid !== redisBefore);
    remember();
    expect(s.out()).toMatch(/redis-server was killed by SIGKILL after [\d.]+ s/);
    expect(s.out()).toMatch(/restarting redis-server in 0\.5 s \(crash 1 in a row\)/);
    const redisUrl = readRunFile(dataDir).backends!.redisUrl;
    // Said right after the run file is written: wait for the line rather than race the pipe.
    const back = `redis-server is back on ${redisUrl} (pid ${readRunFile(dataDir).children['redis']!.pid}, its AOF replayed)`;
    await until('the stack to say redis-server is back', () => s.out().includes(back), 10_000);
    await until('the view read back after the restart', async () => (await views()) === 1);
    await until(
      'the collector ready again',
      async () => (await fetch(`${urls['collector']}/readyz`).catch(() => undefined))?.status === 200,
    );
    await sendView();
    await until('a view sent after the restart counted', async () => (await views()) === 2);
    expect(appPids()).toEqual(appsBefore);

    s.child.kill('SIGTERM');
    const { code } = await Promise.race([
      s.exit,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('stack did not exit within 30 s')), 30_000)),
    ]);
    expect(code).toBe(0);
    expect([...pids].filter(isAlive)).toEqual([]);
    expect(existsSync(path.join(dataDir, 'stack.json'))).toBe(false);
    expect(s.out()).toContain('received SIGTERM: stopping');
    expect(s.err()).toBe('');

    // With the stack gone they refuse to guess.
    const after = await npmRun('tenants', ['show', 'DEMO'], dataDir);
    expect(after.code).toBe(1);
    // (A first line says so when the bundle is rebuilt because a source changed meanwhile.)
    expect(after.err).toMatch(
      /^(tally: building tenants \(sources changed\)\n)?tally: no DynamoDB to use: DYNAMODB_ENDPOINT .* is not set and no npm start stack is running on /,
    );
  }, 240_000);

  it('with REDIS_SENTINELS runs on the master the Sentinels name, starts no redis-server, and the tools follow it', async () => {
    const master = await startRedis();
    const sentinel = await startSentinel({ masterPort: master.port });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tally-stack-sentinel-'));
    const env: Record<string, string> = {
      TALLY_DATA_DIR: dir,
      STACK_STOP_TIMEOUT_MS: '5000',
      REDIS_SENTINELS: `127.0.0.1:${sentinel.port}`,
    };
    for (const app of APPS) env[app.portVariable] = String(await findFreePort());
    const s = startStack(env);
    try {
      const failed = s.exit.then(({ code }) => {
        throw new Error(`stack exited early with ${code}\n${s.out()}\n${s.err()}`);
      });
      await Promise.race([
        until('Tally is running', () => /^ {2}dynamodb /m.test(s.out()) && s.out().includes('Tally is running.'), 90_000),
        failed,
      ]);
      expect(s.out()).toContain(
        `redis ready at redis://127.0.0.1 (the master mymaster of Redis Sentinels REDIS_SENTINELS=127.0.0.1:${sentinel.port})`,
      );
      const run = readRunFile(dir);
      expect(Object.keys(run.children).sort()).toEqual(['bucket-aggregator', 'collector', 'dynamo-writer', 'query-api']);
      expect(run.backends).toMatchObject({ redisSentinels: `127.0.0.1:${sentinel.port}` });

      // A view goes through the master the Sentinels name, and is counted.
      await until('the demo store', () => existsSync(path.join(dir, 'demo-keys.json')));
      const keys = JSON.parse(readFileSync(path.join(dir, 'demo-keys.json'), 'utf8')) as { ingestKey: string; readKey: string };
      const [collector, queryApi] = [`http://127.0.0.1:${env['COLLECTOR_PORT']}`, `http://127.0.0.1:${env['QUERY_API_PORT']}`];
      const event = { type: 'view', ts: Date.now(), dims: { product: 'P_SENTINEL', visitor: 'V1' } };
      const sent = await fetch(`${collector}/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${keys.ingestKey}`, 'content-type': 'application/json' },
        body: JSON.stringify([event]),
      });
      expect(sent.status, await sent.text()).toBe(202);
      const q = '/v1/series?entity=product%3AP_SENTINEL&metrics=ViewCount&range=allTime&granularity=total';
      await until('the view counted', async () => {
        const res = await fetch(queryApi + q, { headers: { authorization: `Bearer ${keys.readKey}` } }).catch(() => undefined);
        return res?.ok && ((await res.json()) as { totals: { ViewCount: number } }).totals.ViewCount === 1;
      });
      const onMaster = testRedis(master.url);
      expect((await onMaster.keys('t:{DEMO}:*')).length).toBeGreaterThan(0);
      onMaster.disconnect();

      // The dlq tool asks the same Sentinels, from the run file.
      const dlq = await npmRun('dlq', ['list'], dir);
      expect(dlq, JSON.stringify(dlq)).toMatchObject({ code: 0 });
      expect(dlq.err).toContain(`tally: using Redis Sentinel 127.0.0.1:${sentinel.port} (the npm start stack, pid ${s.child.pid}, `);
    } finally {
      s.child.kill('SIGTERM');
      await Promise.race([s.exit, new Promise((r) => setTimeout(r, 30_000))]);
      await sentinel.stop();
      await master.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  it('with a REDIS_URL whose password Redis refuses: names the apps not ready, and never shows the password', async () => {
    const redis = await startRedis();
    const admin = testRedis(redis.url);
    await admin.config('SET', 'requirepass', 'the-right-one');
    admin.disconnect();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tally-stack-wrongpass-'));
    const env: Record<string, string> = {
      TALLY_DATA_DIR: dir,
      STACK_STOP_TIMEOUT_MS: '5000',
      STACK_READY_TIMEOUT_MS: '2000',
      REDIS_URL: `redis://:wrong-s3cret@127.0.0.1:${redis.port}`,
    };
    for (const app of APPS) env[app.portVariable] = String(await findFreePort());
    const s = startStack(env);
    try {
      const failed = s.exit.then(({ code }) => {
        throw new Error(`stack exited early with ${code}\n${s.out()}\n${s.err()}`);
      });
      await Promise.race([until('the URLs', () => /^ {2}dynamodb /m.test(s.out()), 90_000), failed]);
      expect(s.out()).toContain('Tally started, but not every app is ready yet. Ctrl-C stops it.');
      for (const app of APPS) expect(s.out()).toMatch(new RegExp(`^  ${app.name} .*\\(not ready yet: `, 'm'));
      expect(s.out()).toContain(`redis ready at redis://***@127.0.0.1:${redis.port} (from REDIS_URL)`);
      expect(s.out()).toMatch(new RegExp(`^  redis +redis://\\*\\*\\*@127\\.0\\.0\\.1:${redis.port} `, 'm'));
      // The tools connect with the URL the run file keeps whole: only its owner may read it.
      expect(readRunFile(dir).backends!.redisUrl).toBe(env['REDIS_URL']);
      expect(statSync(path.join(dir, 'stack.json')).mode & 0o777).toBe(0o600);
    } finally {
      s.child.kill('SIGTERM');
      await Promise.race([s.exit, new Promise((r) => setTimeout(r, 30_000))]);
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    }
    // Nor do the apps' logs, which the stack prints: ioredis rejects their commands with the failed AUTH, args and all.
    expect(s.out() + s.err()).not.toContain('wrong-s3cret');
  }, 180_000);

  it('says in one line how to get redis-server when it is not installed, and exits 1', async () => {
    const emptyPath = mkdtempSync(path.join(os.tmpdir(), 'tally-no-redis-'));
    try {
      const s = startStack({ PATH: emptyPath, TALLY_DATA_DIR: path.join(dataDir, 'no-redis') });
      const { code } = await s.exit;
      expect(code).toBe(1);
      expect(s.out()).toBe('');
      const lines = s.err().trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        /^tally: redis-server was not found on PATH: .*apt-get install redis-server.*brew install redis.*set REDIS_URL/,
      );
    } finally {
      rmSync(emptyPath, { recursive: true, force: true });
    }
  });
});
