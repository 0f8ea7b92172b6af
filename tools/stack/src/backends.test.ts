import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chooseBackends, type RunState } from './run-file';

let root: string;
const stackCmdline = () => 'node --import tsx tools/stack/src/main.ts';
const backends = {
  redisUrl: 'redis://127.0.0.1:41001',
  dynamoEndpoint: 'http://127.0.0.1:41002',
  table: 'tally',
  region: 'eu-west-1',
  collectorUrl: 'http://127.0.0.1:41003',
};

function writeRunFile(dir: string, state: Partial<RunState>): void {
  writeFileSync(
    path.join(dir, 'stack.json'),
    JSON.stringify({ stackPid: process.pid, startedAt: new Date().toISOString(), children: {}, ...state }),
  );
}

beforeAll(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'tally-backends-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('chooseBackends (npm run dlq / tenants)', () => {
  it("uses the running stack's Redis, DynamoDB, table and region when no variable is set, and says so", () => {
    const dir = mkdtempSync(path.join(root, 'running-'));
    writeRunFile(dir, { backends });
    const choice = chooseBackends({ TALLY_DATA_DIR: dir }, { redis: true, dynamo: true }, root, stackCmdline);
    expect(choice.env).toMatchObject({
      REDIS_URL: backends.redisUrl,
      DYNAMODB_ENDPOINT: backends.dynamoEndpoint,
      DYNAMODB_TABLE: 'tally',
      AWS_REGION: 'eu-west-1',
    });
    expect(choice.notes).toEqual([
      `Redis redis://127.0.0.1:41001 (the npm start stack, pid ${process.pid}, ${path.relative(root, path.join(dir, 'stack.json'))})`,
      `DynamoDB http://127.0.0.1:41002, table tally (the npm start stack, pid ${process.pid}, ${path.relative(root, path.join(dir, 'stack.json'))})`,
    ]);
  });

  it("takes the stack's Redis Cluster, KEY_PREFIX and QUEUE_SHARDS with its Redis, the environment's own prefix and shards first", () => {
    const dir = mkdtempSync(path.join(root, 'cluster-'));
    const layout = { redisClusterNodes: '127.0.0.1:41011,127.0.0.1:41012', keyPrefix: 'shop', queueShards: '3' };
    writeRunFile(dir, { backends: { ...backends, ...layout } });
    const choice = chooseBackends({ TALLY_DATA_DIR: dir }, { redis: true }, root, stackCmdline);
    expect(choice.env).toMatchObject({
      REDIS_URL: backends.redisUrl,
      REDIS_CLUSTER_NODES: layout.redisClusterNodes,
      KEY_PREFIX: 'shop',
      QUEUE_SHARDS: '3',
    });
    expect(choice.notes[0]).toMatch(/^Redis Cluster 127\.0\.0\.1:41011,127\.0\.0\.1:41012 \(the npm start stack, pid /);
    const own = chooseBackends({ TALLY_DATA_DIR: dir, QUEUE_SHARDS: '6' }, { redis: true }, root, stackCmdline);
    expect(own.env).toMatchObject({ KEY_PREFIX: 'shop', QUEUE_SHARDS: '6' });
    // A stack on one redis-server with the default layout records none of them, and none is set.
    const plain = mkdtempSync(path.join(root, 'plain-'));
    writeRunFile(plain, { backends });
    const env = chooseBackends({ TALLY_DATA_DIR: plain }, { redis: true }, root, stackCmdline).env;
    expect([env['REDIS_CLUSTER_NODES'], env['KEY_PREFIX'], env['QUEUE_SHARDS']]).toEqual([undefined, undefined, undefined]);
  });

  it("takes the stack's Redis Sentinels and master's name, and says it uses them", () => {
    const dir = mkdtempSync(path.join(root, 'sentinel-'));
    writeRunFile(dir, {
      backends: { ...backends, redisUrl: 'redis://127.0.0.1', redisSentinels: '127.0.0.1:26379', redisSentinelMaster: 'shop' },
    });
    const choice = chooseBackends({ TALLY_DATA_DIR: dir }, { redis: true }, root, stackCmdline);
    expect(choice.env).toMatchObject({ REDIS_URL: 'redis://127.0.0.1', REDIS_SENTINELS: '127.0.0.1:26379', REDIS_SENTINEL_MASTER: 'shop' });
    expect(choice.notes[0]).toMatch(/^Redis Sentinel 127\.0\.0\.1:26379 \(the npm start stack, pid /);
  });

  it('a variable that is set wins over the stack', () => {
    const dir = mkdtempSync(path.join(root, 'override-'));
    writeRunFile(dir, { backends });
    const choice = chooseBackends({ TALLY_DATA_DIR: dir, REDIS_URL: 'redis://10.0.0.5:6379' }, { redis: true }, root, stackCmdline);
    expect(choice.env['REDIS_URL']).toBe('redis://10.0.0.5:6379');
    expect(choice.notes).toEqual(['Redis redis://10.0.0.5:6379 (REDIS_URL)']);
    const sentinel = chooseBackends({ TALLY_DATA_DIR: dir, REDIS_SENTINELS: '10.0.0.6:26379' }, { redis: true }, root, stackCmdline);
    expect(sentinel.env['REDIS_URL']).toBeUndefined();
    expect(sentinel.notes).toEqual(['Redis Sentinel 10.0.0.6:26379 (REDIS_SENTINELS)']);
    // What is said on stderr never carries a REDIS_URL's password; the apps still get it whole.
    const secret = chooseBackends(
      { TALLY_DATA_DIR: dir, REDIS_URL: 'rediss://app:s3cret@10.0.0.5:6380/2' },
      { redis: true },
      root,
      stackCmdline,
    );
    expect(secret.env['REDIS_URL']).toBe('rediss://app:s3cret@10.0.0.5:6380/2');
    expect(secret.notes).toEqual(['Redis rediss://***@10.0.0.5:6380/2 (REDIS_URL)']);
  });

  it("the stack's own REDIS_URL is said without its password too", () => {
    const dir = mkdtempSync(path.join(root, 'secret-'));
    writeRunFile(dir, { backends: { ...backends, redisUrl: 'redis://:s3cret@127.0.0.1:41011' } });
    const choice = chooseBackends({ TALLY_DATA_DIR: dir }, { redis: true }, root, stackCmdline);
    expect(choice.env['REDIS_URL']).toBe('redis://:s3cret@127.0.0.1:41011');
    expect(choice.notes[0]).toMatch(/^Redis redis:\/\/\*\*\*@127\.0\.0\.1:41011 \(the npm start stack, pid /);
  });

  it('refuses to guess when no stack runs: no run file, a dead stack pid, or a pid that is not the stack any more', () => {
    const none = mkdtempSync(path.join(root, 'none-'));
    const dead = mkdtempSync(path.join(root, 'dead-'));
    writeRunFile(dead, { stackPid: 2 ** 22 + 17, backends }); // above Linux's pid_max: never alive
    const reused = mkdtempSync(path.join(root, 'reused-'));
    writeRunFile(reused, { backends });
    for (const [dir, cmdline] of [
      [none, stackCmdline],
      [dead, stackCmdline],
      [reused, () => 'vim notes.txt'],
    ] as const) {
      expect(() => chooseBackends({ TALLY_DATA_DIR: dir }, { redis: true }, root, cmdline)).toThrow(
        expect.objectContaining({
          code: 'TALLY_ERR_NO_BACKEND',
          message: expect.stringMatching(
            /^no Redis to use: REDIS_URL is not set and no npm start stack is running on .*Start one \(npm start\), or set REDIS_URL\.$/,
          ),
        }),
      );
    }
    expect(() => chooseBackends({ TALLY_DATA_DIR: none }, { dynamo: true }, root, stackCmdline)).toThrow(/^no DynamoDB to use/);
  });

  it('a running stack whose run file does not say where its backends are is named, with what to do, not taken for no stack', () => {
    const file = (dir: string) => path.relative(root, path.join(dir, 'stack.json'));
    // Still starting, or started by an npm start older than the run file's backends.
    const starting = mkdtempSync(path.join(root, 'starting-'));
    writeRunFile(starting, {});
    expect(() => chooseBackends({ TALLY_DATA_DIR: starting }, { redis: true }, root, stackCmdline)).toThrow(
      expect.objectContaining({
        code: 'TALLY_ERR_STALE_RUN_FILE',
        message:
          `the running npm start stack (pid ${process.pid}) has not recorded its backends in its run file (${file(starting)}): ` +
          'it is still starting (wait until it prints its URLs), or an older version of npm start started it (restart it). Or set REDIS_URL.',
      }),
    );
    // A run file written before one of the members this version reads.
    const older = mkdtempSync(path.join(root, 'older-'));
    const { table: _table, ...withoutTable } = backends;
    writeRunFile(older, { backends: withoutTable as typeof backends });
    expect(() => chooseBackends({ TALLY_DATA_DIR: older }, { dynamo: true }, root, stackCmdline)).toThrow(
      expect.objectContaining({
        code: 'TALLY_ERR_STALE_RUN_FILE',
        message:
          `the running npm start stack (pid ${process.pid}) has a run file (${file(older)}) that predates table: it was started by an older ` +
          'version of npm start. Restart npm start (Ctrl-C, then npm start again), or set DYNAMODB_ENDPOINT, DYNAMODB_TABLE and AWS_REGION.',
      }),
    );
    // What the file does have is used when it is all that is needed, and a variable that is set needs no file.
    expect(chooseBackends({ TALLY_DATA_DIR: older }, { redis: true }, root, stackCmdline).env['REDIS_URL']).toBe(backends.redisUrl);
    expect(chooseBackends({ TALLY_DATA_DIR: older, DYNAMODB_TABLE: 't2' }, { dynamo: true }, root, stackCmdline).env).toMatchObject({
      DYNAMODB_ENDPOINT: backends.dynamoEndpoint,
      DYNAMODB_TABLE: 't2',
    });
    expect(
      chooseBackends({ TALLY_DATA_DIR: starting, REDIS_URL: 'redis://10.0.0.5:6379' }, { redis: true }, root, stackCmdline).notes,
    ).toEqual(['Redis redis://10.0.0.5:6379 (REDIS_URL)']);
  });

  it('AWS_REGION without DYNAMODB_ENDPOINT means AWS DynamoDB, said out loud', () => {
    const dir = mkdtempSync(path.join(root, 'aws-'));
    expect(chooseBackends({ TALLY_DATA_DIR: dir, AWS_REGION: 'eu-central-1' }, { dynamo: true }, root).notes).toEqual([
      'AWS DynamoDB in eu-central-1 (AWS_REGION, no DYNAMODB_ENDPOINT)',
    ]);
  });
});
