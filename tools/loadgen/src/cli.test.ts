import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCollectorUrl, clientTarget, loadTarget, parseStores, readKeysFile, stackDemoStore } from './cli';
import { loadTo } from './driver';

let root: string;
beforeAll(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'tally-loadgen-cli-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('npm run loadgen', () => {
  it("sends to the running npm start stack's collector and Redis unless --url, --redis-url or REDIS_URL say otherwise", async () => {
    // A process whose command line is the stack's, as the run file's reader checks before trusting it.
    const stack = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', 'tools/stack/src/main.ts'], { stdio: 'ignore' });
    try {
      const backends = {
        redisUrl: 'redis://127.0.0.1:41001',
        collectorUrl: 'http://127.0.0.1:41003',
        dynamoEndpoint: '',
        table: '',
        region: '',
      };
      writeFileSync(path.join(root, 'stack.json'), JSON.stringify({ stackPid: stack.pid, startedAt: '', children: {}, backends }));
      const from = `the npm start stack, pid ${stack.pid}, stack.json`;
      const env = { TALLY_DATA_DIR: root };
      expect(loadTarget('collector', undefined, env, root)).toEqual([backends.collectorUrl, from]);
      expect(loadTarget('redis', undefined, env, root)).toEqual([backends.redisUrl, from]);
      expect(loadTarget('collector', 'http://10.0.0.7:7401', env, root)).toEqual(['http://10.0.0.7:7401', '--url']);
      expect(loadTarget('redis', 'redis://10.0.0.7:6379', env, root)).toEqual(['redis://10.0.0.7:6379', '--redis-url']);
      expect(loadTarget('redis', undefined, { ...env, REDIS_URL: 'redis://10.0.0.8:6379' }, root)).toEqual([
        'redis://10.0.0.8:6379',
        'REDIS_URL',
      ]);
    } finally {
      stack.kill('SIGKILL');
    }
    // No stack running on the data directory: the local defaults.
    const none = { TALLY_DATA_DIR: path.join(root, 'none') };
    expect(loadTarget('collector', undefined, none, root)).toEqual(['http://127.0.0.1:7401', 'no npm start stack runs']);
    expect(loadTarget('redis', undefined, none, root)).toEqual(['redis://127.0.0.1:6379', 'no npm start stack runs']);
  });

  it("--via client takes the stack's Redis Cluster, KEY_PREFIX and QUEUE_SHARDS, or the environment's, checked", () => {
    const stack = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', 'tools/stack/src/main.ts'], { stdio: 'ignore' });
    const dir = mkdtempSync(path.join(root, 'layout-'));
    try {
      const layout = { redisClusterNodes: '127.0.0.1:41011,127.0.0.1:41012', keyPrefix: 'shop', queueShards: '3' };
      const backends = { redisUrl: 'redis://127.0.0.1:41011', collectorUrl: '', dynamoEndpoint: '', table: '', region: '', ...layout };
      writeFileSync(path.join(dir, 'stack.json'), JSON.stringify({ stackPid: stack.pid, startedAt: '', children: {}, backends }));
      const env = { TALLY_DATA_DIR: dir };
      const nodes = [
        { host: '127.0.0.1', port: 41011 },
        { host: '127.0.0.1', port: 41012 },
      ];
      const onStack = clientTarget(undefined, env, root);
      expect(onStack.options).toEqual({
        connection: { REDIS_URL: 'redis://127.0.0.1:41011', REDIS_CLUSTER_NODES: nodes },
        keyPrefix: 'shop',
        queueShards: 3,
      });
      expect(onStack.said).toMatch(
        /^Redis Cluster 127\.0\.0\.1:41011,127\.0\.0\.1:41012 \(the npm start stack, .*\), KEY_PREFIX shop, QUEUE_SHARDS 3$/,
      );
      // --redis-url names one server: the stack's layout is not taken for it, the environment's is.
      expect(clientTarget('redis://10.0.0.7:6379', { ...env, QUEUE_SHARDS: '2' }, root).options).toEqual({
        connection: { REDIS_URL: 'redis://10.0.0.7:6379', REDIS_CLUSTER_NODES: undefined },
        keyPrefix: 't',
        queueShards: 2,
      });
      expect(clientTarget(undefined, { ...env, REDIS_CLUSTER_NODES: '127.0.0.1:42001' }, root).options.connection).toEqual({
        REDIS_URL: 'redis://127.0.0.1:6379',
        REDIS_CLUSTER_NODES: [{ host: '127.0.0.1', port: 42001 }],
      });
      expect(() => clientTarget(undefined, { ...env, QUEUE_SHARDS: 'many' }, root)).toThrow(/QUEUE_SHARDS/);
      // A REDIS_URL's password reaches the connection, never what is said.
      const secret = clientTarget('redis://app:s3cret@10.0.0.7:6379', env, root);
      expect(secret.options.connection.REDIS_URL).toBe('redis://app:s3cret@10.0.0.7:6379');
      expect(secret.said).toMatch(/^Redis redis:\/\/\*\*\*@10\.0\.0\.7:6379 \(--redis-url\), /);
      // A stack on Redis Sentinel: its Sentinels and master's name, with the environment's Sentinel password.
      const sentinelDir = mkdtempSync(path.join(root, 'sentinel-'));
      const sentinelLayout = { redisSentinels: '127.0.0.1:26379', redisSentinelMaster: 'shop-master' };
      const onSentinels = { ...backends, redisClusterNodes: undefined, redisUrl: 'redis://127.0.0.1', ...sentinelLayout };
      writeFileSync(
        path.join(sentinelDir, 'stack.json'),
        JSON.stringify({ stackPid: stack.pid, startedAt: '', children: {}, backends: onSentinels }),
      );
      const viaSentinels = clientTarget(undefined, { TALLY_DATA_DIR: sentinelDir, REDIS_SENTINEL_PASSWORD: 's3cret' }, root);
      expect(viaSentinels.options.connection).toEqual({
        REDIS_URL: 'redis://127.0.0.1',
        REDIS_SENTINELS: [{ host: '127.0.0.1', port: 26379 }],
        REDIS_SENTINEL_MASTER: 'shop-master',
        REDIS_SENTINEL_PASSWORD: 's3cret',
      });
      expect(viaSentinels.said).toMatch(/^Redis Sentinel 127\.0\.0\.1:26379 \(the npm start stack, .*\), KEY_PREFIX shop, QUEUE_SHARDS 3$/);
      // The environment's own Sentinels win over the stack.
      expect(clientTarget(undefined, { ...env, REDIS_SENTINELS: '127.0.0.1:26380' }, root).options.connection).toMatchObject({
        REDIS_SENTINELS: [{ host: '127.0.0.1', port: 26380 }],
        REDIS_CLUSTER_NODES: undefined,
      });
    } finally {
      stack.kill('SIGKILL');
    }
  });

  it("takes the running npm start stack's demo store and its saved ingest key when no store is given", async () => {
    const dir = mkdtempSync(path.join(root, 'demo-'));
    const env = { TALLY_DATA_DIR: dir };
    writeFileSync(path.join(dir, 'demo-keys.json'), JSON.stringify({ store: 'DEMO', ingestKey: 'tly_ingest', readKey: 'tly_read' }));
    // No stack runs on the directory: no demo store, even with its keys file there.
    expect(stackDemoStore(env, root)).toBeUndefined();
    const stack = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', 'tools/stack/src/main.ts'], { stdio: 'ignore' });
    try {
      writeFileSync(path.join(dir, 'stack.json'), JSON.stringify({ stackPid: stack.pid, startedAt: '', children: {} }));
      const file = path.join(path.relative(root, dir), 'demo-keys.json');
      expect(stackDemoStore(env, root)).toEqual({ store: 'DEMO', ingestKey: 'tly_ingest', file });
      writeFileSync(path.join(dir, 'demo-keys.json'), '{"store":');
      expect(stackDemoStore(env, root)).toBeUndefined();
      rmSync(path.join(dir, 'demo-keys.json'));
      expect(stackDemoStore(env, root)).toBeUndefined();
    } finally {
      stack.kill('SIGKILL');
    }
  });

  it("says what is wrong and what to do when the running stack's run file predates collectorUrl, and exits 2", async () => {
    const stack = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', 'tools/stack/src/main.ts'], { stdio: 'ignore' });
    const dir = mkdtempSync(path.join(root, 'older-'));
    try {
      // What an npm start from before loadgen read the run file wrote: the backends without collectorUrl.
      const backends = {
        redisUrl: 'redis://127.0.0.1:41001',
        dynamoEndpoint: 'http://127.0.0.1:41002',
        table: 'tally',
        region: 'eu-west-1',
      };
      writeFileSync(path.join(dir, 'stack.json'), JSON.stringify({ stackPid: stack.pid, startedAt: '', children: {}, backends }));
      const env = { TALLY_DATA_DIR: dir };
      const file = path.join(dir, 'stack.json');
      const expected = (shown: string) =>
        `the running npm start stack (pid ${stack.pid}) has a run file (${shown}) that predates collectorUrl: it was started by an ` +
        'older version of npm start. Restart npm start (Ctrl-C, then npm start again), or pass --url URL.';
      expect(() => loadTarget('collector', undefined, env, root)).toThrow(
        expect.objectContaining({ code: 'TALLY_ERR_STALE_RUN_FILE', message: expected(path.relative(root, file)) }),
      );
      // --url needs no collector from the file; --via client needs none at all and takes the stack's Redis.
      expect(loadTarget('collector', 'http://10.0.0.7:7401', env, root)).toEqual(['http://10.0.0.7:7401', '--url']);
      expect(loadTarget('redis', undefined, env, root)).toEqual([
        backends.redisUrl,
        `the npm start stack, pid ${stack.pid}, ${path.relative(root, file)}`,
      ]);

      // As a user runs it (from the repository, the run file elsewhere): one line saying so before the usage, exit code 2.
      const main = path.join(import.meta.dirname, 'main.ts');
      const run = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = execFile(
          process.execPath,
          ['--no-warnings', '--import', 'tsx', main, '--key', 'KTM1=k', '--key', 'LAX1=k', '--key', 'UTC1=k', '--duration', '1', '--quiet'],
          { env: { ...process.env, TALLY_DATA_DIR: dir }, timeout: 60_000 },
          (_err, _stdout, stderr) => resolve({ code: child.exitCode, stderr }),
        );
      });
      expect(run.code).toBe(2);
      expect(run.stderr.split('\n')[0]).toBe(`loadgen: ${expected(file)}`);
      expect(run.stderr).toMatch(/\nusage: npm run loadgen -- \[options\]\n/);
    } finally {
      stack.kill('SIGKILL');
    }
  });

  it('--help says where --url and --redis-url come from, every continued line under its first', async () => {
    const main = path.join(import.meta.dirname, 'main.ts');
    const { stdout } = await promisify(execFile)(process.execPath, ['--no-warnings', '--import', 'tsx', main, '--help']);
    const lines = stdout.split('\n');
    expect(lines.find((l) => l.startsWith('  --url '))).toMatch(
      /default the running npm start stack's collector, else http:\/\/127\.0\.0\.1:7401\)$/,
    );
    const redis = lines.findIndex((l) => l.startsWith('  --redis-url '));
    expect(`${lines[redis]} ${lines[redis + 1]!.trim()}`).toMatch(
      /\(default REDIS_CLUSTER_NODES, REDIS_SENTINELS or REDIS_URL, else the running npm start stack's Redis, Cluster or Sentinels, else redis:/,
    );
    const column = lines[1]!.indexOf('events per second');
    for (const line of lines.slice(1).filter((l) => l && !l.startsWith('  --')))
      expect(line.search(/\S/), `continued line ${JSON.stringify(line)}`).toBe(column);
  });
});

/** `npm run loadgen -- ARGS` with no npm start stack running; its exit code and output (killed after 30 s). */
async function loadgen(args: string[]) {
  const main = path.join(import.meta.dirname, 'main.ts');
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      ['--no-warnings', '--import', 'tsx', main, ...args],
      { env: { ...process.env, TALLY_DATA_DIR: path.join(root, 'no-stack') }, timeout: 30_000 },
      (_err, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr }),
    );
  });
}

/** A usage error: exit code 2 before anything starts, `loadgen: <message>` then the usage, no stack trace. */
async function expectUsageError(args: string[], message: string | RegExp) {
  const run = await loadgen(args);
  const command = args.includes('--soak') ? 'soak' : 'loadgen';
  const [first, second] = run.stderr.split('\n');
  expect([run.code, first], run.stderr).toEqual([
    2,
    typeof message === 'string' ? `${command}: ${message}` : expect.stringMatching(message),
  ]);
  expect(second).toBe(`usage: npm run ${command === 'soak' ? 'test:soak' : 'loadgen'} -- [options]`);
  expect(run.stderr).not.toMatch(/\n\s+at /);
  expect(run.stderr).not.toMatch(/starting a local fleet/);
  expect(run.stdout).toBe('');
}

// Sends to a port nothing listens on, were it to start.
const nowhere = ['--url', 'http://127.0.0.1:9', '--key', 'S1=tly_k', '--key', 'a:b=tly_k', '--duration', '1', '--quiet'];

describe('npm run loadgen checks its command line before anything starts', () => {
  it('--stores: each STORE:ZONE split at its last ":", the id and zone checked, no id twice', async () => {
    expect(parseStores('S1:Europe/Paris,a:b:UTC,shop.2-x:Asia/Kathmandu')).toEqual([
      { id: 'S1', timeZone: 'Europe/Paris' },
      { id: 'a:b', timeZone: 'UTC' },
      { id: 'shop.2-x', timeZone: 'Asia/Kathmandu' },
    ]);
    expect(() => parseStores('S1:Europe/Pariss')).toThrow(
      '--stores: time zone "Europe/Pariss" of store S1 is not an IANA time zone name such as Europe/Paris or UTC',
    );
    expect(() => parseStores('S1:UTC,_S2:UTC')).toThrow('--stores: store id "_S2" is invalid: 1-128 characters of A-Z');
    expect(() => parseStores('S 1:UTC')).toThrow('--stores: store id "S 1" is invalid');
    expect(() => parseStores(`${'S'.repeat(129)}:UTC`)).toThrow('is invalid');
    expect(() => parseStores('S1:UTC,a:b:UTC,S1:Europe/Paris')).toThrow('--stores names store S1 twice');
    for (const entry of ['S1', 'S1:', ':UTC', ''])
      expect(() => parseStores(entry)).toThrow(`--stores entries are STORE:ZONE, got ${JSON.stringify(entry)}`);

    await expectUsageError(
      ['--stores', 'S1:Europe/Pariss', ...nowhere],
      '--stores: time zone "Europe/Pariss" of store S1 is not an IANA time zone name such as Europe/Paris or UTC',
    );
    await expectUsageError(['--stores', 'S1:UTC,S1:UTC', ...nowhere], '--stores names store S1 twice');
  });

  it('--stores with --fleet: a bad zone, id or a duplicate stops it before Redis and dynalite start', async () => {
    await expectUsageError(['--fleet', '--stores', 'S1:Europe/Pariss'], /^loadgen: --stores: time zone "Europe\/Pariss" of store S1 /);
    await expectUsageError(['--fleet', '--stores', 'a:b:UTC,a:b:UTC'], '--stores names store a:b twice');
    await expectUsageError(['--fleet', '--stores', 'S#1:UTC'], /^loadgen: --stores: store id "S#1" is invalid/);
  });

  it('counts (--products, --visitors, --concurrency, --seed, --batch) take whole numbers', async () => {
    await expectUsageError(['--stores', 'S1:UTC', '--products', '1.5', ...nowhere], '--products must be a whole number >= 1, got "1.5"');
    await expectUsageError(['--stores', 'S1:UTC', '--visitors', '2.5', ...nowhere], '--visitors must be a whole number >= 1, got "2.5"');
    await expectUsageError(
      ['--stores', 'S1:UTC', '--concurrency', '1.5', ...nowhere],
      '--concurrency must be a whole number >= 1, got "1.5"',
    );
    await expectUsageError(['--stores', 'S1:UTC', '--seed', '0.5', ...nowhere], '--seed must be a whole number >= 0, got "0.5"');
    await expectUsageError(['--stores', 'S1:UTC', '--seed', '', ...nowhere], '--seed must be a whole number >= 0, got ""');
    await expectUsageError(
      ['--stores', 'S1:UTC', '--batch', '10.5-20', ...nowhere],
      '--batch takes N or MIN-MAX, whole numbers of at least 1, got 10.5-20',
    );
  });

  it('--keys-file: a file it cannot read, not JSON, or not {"STORE":"KEY"} is one line, exit code 2', async () => {
    const dir = mkdtempSync(path.join(root, 'keys-'));
    const file = (name: string, text: string) => {
      writeFileSync(path.join(dir, name), text);
      return path.join(dir, name);
    };
    const good = file('good.json', '{"S1":"tly_a","a:b":"tly_b"}');
    expect(readKeysFile(good)).toEqual(
      new Map([
        ['S1', 'tly_a'],
        ['a:b', 'tly_b'],
      ]),
    );
    const missing = path.join(dir, 'missing.json');
    expect(() => readKeysFile(missing)).toThrow(`cannot read --keys-file ${missing}: ENOENT: no such file or directory`);
    const broken = file('broken.json', '{"S1": "tly_a",');
    expect(() => readKeysFile(broken)).toThrow(`--keys-file ${broken} is not JSON: `);
    const list = file('list.json', '["tly_a"]');
    expect(() => readKeysFile(list)).toThrow(`--keys-file ${list} must hold a JSON object {"STORE":"KEY",…}, got an array`);
    const numbers = file('numbers.json', '{"S1": 5}');
    expect(() => readKeysFile(numbers)).toThrow(`--keys-file ${numbers}: the key of store "S1" must be a non-empty string, got 5`);

    const args = ['--stores', 'S1:UTC', '--url', 'http://127.0.0.1:9', '--duration', '1', '--quiet', '--keys-file'];
    await expectUsageError([...args, missing], new RegExp(`^loadgen: cannot read --keys-file ${missing}: ENOENT`));
    await expectUsageError([...args, broken], new RegExp(`^loadgen: --keys-file ${broken} is not JSON: `));
    await expectUsageError([...args, numbers], `--keys-file ${numbers}: the key of store "S1" must be a non-empty string, got 5`);
  });

  it('no store and no key given: says in which data directory it found no stack (npm start may use TALLY_DATA_DIR)', async () => {
    const dir = path.join(root, 'no-stack');
    await expectUsageError(
      ['--url', 'http://127.0.0.1:9', '--duration', '1', '--quiet'],
      `no store given and found no running npm start stack in ${dir} (one started with TALLY_DATA_DIR: run loadgen with ` +
        'the same): give --stores STORE:ZONE and --key STORE=<key>, or --fleet',
    );
    await expectUsageError(
      ['--stores', 'S1:UTC', '--url', 'http://127.0.0.1:9'],
      'no ingest key for store S1: give --key S1=<key> or --fleet',
    );
  });

  it('--url: an http:// or https:// URL, else a usage error at once (not 120 s of retries)', async () => {
    expect(checkCollectorUrl('http://127.0.0.1:7401')).toBe('http://127.0.0.1:7401');
    expect(checkCollectorUrl('https://tally.example.com/')).toBe('https://tally.example.com');
    for (const bad of ['localhost:7401', '127.0.0.1:7401', 'ftp://127.0.0.1', 'http//x', ''])
      expect(() => checkCollectorUrl(bad)).toThrow(
        `--url takes the collector's http:// or https:// URL, such as http://127.0.0.1:7401, got ${JSON.stringify(bad)}`,
      );
    const started = Date.now();
    await expectUsageError(
      ['--stores', 'S1:UTC', '--key', 'S1=tly_k', '--duration', '1', '--quiet', '--url', 'localhost:7401'],
      `--url takes the collector's http:// or https:// URL, such as http://127.0.0.1:7401, got "localhost:7401"`,
    );
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('--soak: a run too short for its warm-up and 3 samples is refused, naming the shortest; the dedupe window the apps take', async () => {
    await expectUsageError(
      ['--soak', '--minutes', '1'],
      'a soak run of 60 s is too short: after its 75 s warm-up the judges need 3 samples, --sample-seconds 5 apart; the shortest run is 90 s (--duration 90 or --minutes 1.5)',
    );
    await expectUsageError(['--soak', '--dedupe-window', '90.5'], '--dedupe-window must be a whole number from 60 to 2592000, got "90.5"');
  });
});

describe('loadTo', () => {
  it('stops at the first 413 of a valid batch and says why, instead of counting every larger batch as a mismatch', async () => {
    // A collector that takes at most 50 events a request, as MAX_EVENTS_PER_REQUEST=50 would.
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const n = (JSON.parse(body) as unknown[]).length;
        const [status, answer] =
          n > 50
            ? [413, { code: 'TALLY_ERR_TOO_MANY_EVENTS', detail: `the request has ${n} events; MAX_EVENTS_PER_REQUEST is 50` }]
            : [202, { accepted: n }];
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      const stores = [{ id: 'S1', timeZone: 'UTC' }];
      const run = loadTo(
        { stores, http: { url: `http://127.0.0.1:${port}`, keyOf: () => 'tly_x' }, client: { connection: 'redis://127.0.0.1:1' } },
        { via: 'http', concurrency: 2, load: { seed: 7, batchSize: [30, 90], lateShare: 0, maxEvents: 20_000 } },
      );
      const stats = await run.done;
      expect(stats.stoppedBy).toMatch(/^the collector refused a batch of \d+ events as too large: .*MAX_EVENTS_PER_REQUEST is 50/);
      expect(stats.edgeMismatches).toEqual([]);
      // It stopped taking batches: each of the 2 workers finished the batch it had, far short of the 20,000 events.
      expect(stats.eventsSent).toBeLessThan(2_000);
    } finally {
      server.close();
    }
  });
});
