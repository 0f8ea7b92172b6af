import { describe, expect, it } from 'vitest';
import { REPO_ROOT as repoRoot } from '@tally/testing';
import { APPS, appProcessSpec } from './config';

describe('appProcessSpec', () => {
  const stackVars = {
    REDIS_URL: 'redis://127.0.0.1:5000',
    DYNAMODB_ENDPOINT: 'http://127.0.0.1:5001',
    DYNAMODB_TABLE: 'tally',
    AWS_REGION: 'eu-west-1',
    LOG_LEVEL: 'debug',
    HTTP_PORT: '7403',
  };

  it('binds the apps to 127.0.0.1 unless HTTP_HOST says otherwise', () => {
    expect(appProcessSpec('collector', {}, stackVars).env['HTTP_HOST']).toBe('127.0.0.1');
    expect(appProcessSpec('collector', { HTTP_HOST: '0.0.0.0' }, stackVars).env['HTTP_HOST']).toBe('0.0.0.0');
  });

  it('runs the app with tsx from the repo root, with the backends the stack chose over the caller’s environment', () => {
    const spec = appProcessSpec(
      'bucket-aggregator',
      { REDIS_URL: 'redis://elsewhere:6379', BUCKET_SECONDS: '1', HTTP_PORT: '1' },
      stackVars,
      '/usr/bin/node',
    );
    expect(spec).toEqual({
      name: 'bucket-aggregator',
      command: '/usr/bin/node',
      args: ['--import', 'tsx', 'apps/bucket-aggregator/src/main.ts'],
      cwd: repoRoot,
      env: { HTTP_HOST: '127.0.0.1', BUCKET_SECONDS: '1', ...stackVars },
    });
  });

  it('lists the four apps on docs/DESIGN.md’s ports', () => {
    expect(APPS.map((a) => [a.name, a.defaultPort, a.portVariable])).toEqual([
      ['collector', 7401, 'COLLECTOR_PORT'],
      ['query-api', 7402, 'QUERY_API_PORT'],
      ['bucket-aggregator', 7403, 'AGGREGATOR_PORT'],
      ['dynamo-writer', 7404, 'WRITER_PORT'],
    ]);
  });
});
