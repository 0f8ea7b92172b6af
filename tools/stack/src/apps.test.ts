import { describe, expect, it } from 'vitest';
import { APPS, appProcessSpec } from './apps';

describe('appProcessSpec', () => {
  it('binds the apps to 127.0.0.1 unless HTTP_HOST says otherwise', () => {
    const backends = {
      redisUrl: 'redis://127.0.0.1:5000',
      dynamoEndpoint: 'http://127.0.0.1:5001',
      table: 'tally',
      region: 'eu-west-1',
      logLevel: 'info' as const,
    };
    expect(appProcessSpec(APPS[0]!, 7401, backends, {}, '/repo').env['HTTP_HOST']).toBe('127.0.0.1');
    expect(appProcessSpec(APPS[0]!, 7401, backends, { HTTP_HOST: '0.0.0.0' }, '/repo').env['HTTP_HOST']).toBe('0.0.0.0');
  });

  it('runs the app with tsx from the repo root, with the backends the stack chose over the caller’s environment', () => {
    const spec = appProcessSpec(
      APPS[2]!,
      7403,
      {
        redisUrl: 'redis://127.0.0.1:5000',
        dynamoEndpoint: 'http://127.0.0.1:5001',
        table: 'tally',
        region: 'eu-west-1',
        logLevel: 'debug',
      },
      { REDIS_URL: 'redis://elsewhere:6379', BUCKET_SECONDS: '1', HTTP_PORT: '1' },
      '/repo',
      '/usr/bin/node',
    );
    expect(spec).toEqual({
      name: 'bucket-aggregator',
      command: '/usr/bin/node',
      args: ['--import', 'tsx', 'apps/bucket-aggregator/src/main.ts'],
      cwd: '/repo',
      env: {
        HTTP_HOST: '127.0.0.1',
        BUCKET_SECONDS: '1',
        REDIS_URL: 'redis://127.0.0.1:5000',
        DYNAMODB_ENDPOINT: 'http://127.0.0.1:5001',
        DYNAMODB_TABLE: 'tally',
        AWS_REGION: 'eu-west-1',
        LOG_LEVEL: 'debug',
        HTTP_PORT: '7403',
      },
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
