import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT as repoRoot } from '@tally/testing';
import { WORKERS_STOP_TIMEOUT_MS } from '@tally/queues/worker-app';
import { loadStackConfig } from './config';

describe('loadStackConfig', () => {
  it('defaults: data in <repo>/.data, stores started by the stack, default ports', () => {
    const c = loadStackConfig({}, '/somewhere');
    expect(c.dataDir).toBe(path.join(repoRoot, '.data'));
    expect(c.env.REDIS_URL).toBeUndefined();
    expect(c.env.DYNAMODB_ENDPOINT).toBeUndefined();
    expect(c.env.DYNAMODB_TABLE).toBe('tally');
    expect(c.env.COLLECTOR_PORT).toBeUndefined();
    // More than the worker apps give their workers to finish their jobs: npm start does not SIGKILL one finishing.
    expect(c.env.STACK_STOP_TIMEOUT_MS).toBe(40_000);
    expect(c.env.STACK_STOP_TIMEOUT_MS).toBeGreaterThan(WORKERS_STOP_TIMEOUT_MS);
    expect(c.env.REDIS_APPENDFSYNC).toBe('always');
  });

  it('takes appendfsync everysec for the redis-server it starts, and refuses any other policy', () => {
    expect(loadStackConfig({ REDIS_APPENDFSYNC: 'everysec' }).env.REDIS_APPENDFSYNC).toBe('everysec');
    expect(() => loadStackConfig({ REDIS_APPENDFSYNC: 'no' })).toThrowError(/^REDIS_APPENDFSYNC: .*"everysec".*"always"/);
  });

  it('resolves TALLY_DATA_DIR against the current directory and passes the environment to children', () => {
    const c = loadStackConfig({ TALLY_DATA_DIR: 'tmp/d', BUCKET_SECONDS: '1', WRITER_PORT: '9000' }, '/work');
    expect(c.dataDir).toBe('/work/tmp/d');
    expect(c.env.WRITER_PORT).toBe(9000);
    expect(c.childBaseEnv['BUCKET_SECONDS']).toBe('1');
  });

  it('refuses a bad value with one line naming the variable', () => {
    expect(() => loadStackConfig({ QUERY_API_PORT: '70000' })).toThrowError(/^QUERY_API_PORT: expected a value <= 65535; got "70000"$/);
    expect(() => loadStackConfig({ REDIS_URL: 'localhost:6379' })).toThrowError(/^REDIS_URL: expected a redis:\/\//);
  });

  it('finds the repo root', () => {
    expect(path.join(repoRoot, 'tools/stack/src')).toBe(path.dirname(new URL(import.meta.url).pathname));
  });
});
