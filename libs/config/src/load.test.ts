import { describe, expect, it } from 'vitest';
import { ConfigError, aggregatorEnv, collectorEnv, loadConfig, queryApiEnv, sharedEnvShape, writerEnv } from './index';
import { z } from 'zod';

describe('loadConfig', () => {
  it('applies defaults', () => {
    const c = loadConfig(collectorEnv, {});
    expect(c.REDIS_URL).toBe('redis://127.0.0.1:6379');
    expect(c.DYNAMODB_TABLE).toBe('tally');
    expect(c.DYNAMODB_ENDPOINT).toBeUndefined();
    expect(c.MAX_EVENTS_PER_REQUEST).toBe(1000);
    expect(loadConfig(aggregatorEnv, {}).BUCKET_SECONDS).toBe(900);
    // The writer waits for no Redis replica unless told to.
    expect(loadConfig(writerEnv, {})).toMatchObject({ REDIS_WAIT_REPLICAS: 0, REDIS_WAIT_TIMEOUT_MS: 1000 });
  });

  it('reads only the variables of its app (the collector never reads BUCKET_SECONDS)', () => {
    const c = loadConfig(collectorEnv, { BUCKET_SECONDS: 'soon', DEDUPE_WINDOW_SECONDS: '600' });
    expect(c).not.toHaveProperty('BUCKET_SECONDS');
    // The collector keeps an Idempotency-Key's fingerprint for the dedupe window.
    expect(c.DEDUPE_WINDOW_SECONDS).toBe(600);
  });

  it('coerces numbers and accepts BUCKET_SECONDS=1', () => {
    expect(loadConfig(aggregatorEnv, { BUCKET_SECONDS: '1', HTTP_PORT: '0' }).BUCKET_SECONDS).toBe(1);
  });

  it('names the variable and what it expects', () => {
    expect(() => loadConfig(aggregatorEnv, { BUCKET_SECONDS: 'soon' })).toThrowError(/^BUCKET_SECONDS: expected a number; got "soon"$/);
    expect(() => loadConfig(aggregatorEnv, { BUCKET_SECONDS: '0' })).toThrowError(/^BUCKET_SECONDS: expected a value >= 1/);
    expect(() => loadConfig(writerEnv, { REDIS_URL: 'localhost:6379' })).toThrowError(/^REDIS_URL: expected a redis:\/\//);
    expect(() => loadConfig(writerEnv, { LOG_LEVEL: 'loud' })).toThrowError(/^LOG_LEVEL: expected one of "fatal"/);
    expect(() => loadConfig(writerEnv, { REDIS_WAIT_REPLICAS: '-1' })).toThrowError(/^REDIS_WAIT_REPLICAS: expected a value >= 0/);
    expect(() => loadConfig(writerEnv, { REDIS_WAIT_TIMEOUT_MS: '0' })).toThrowError(/^REDIS_WAIT_TIMEOUT_MS: expected a value >= 10/);
    // More than 23 h of skew would let an event's apply come before the day's start by more than the day's margin
    // top lists keep before a daily ranking may expire (libs/query top.ts).
    expect(loadConfig(collectorEnv, { CLOCK_SKEW_SECONDS: '82800' }).CLOCK_SKEW_SECONDS).toBe(82_800);
    expect(() => loadConfig(collectorEnv, { CLOCK_SKEW_SECONDS: '82801' })).toThrowError(/^CLOCK_SKEW_SECONDS: expected a value <= 82800/);
    try {
      loadConfig(writerEnv, { HTTP_PORT: '70000' });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).variable).toBe('HTTP_PORT');
      expect((err as ConfigError).message).not.toContain('\n');
    }
  });

  it('reads REDIS_SENTINELS as host:port pairs with the master name, and refuses it beside REDIS_CLUSTER_NODES', () => {
    const c = loadConfig(aggregatorEnv, { REDIS_SENTINELS: '10.0.0.1:26379,sentinel-2:26380' });
    expect(c.REDIS_SENTINELS).toEqual([
      { host: '10.0.0.1', port: 26379 },
      { host: 'sentinel-2', port: 26380 },
    ]);
    expect(c.REDIS_SENTINEL_MASTER).toBe('mymaster');
    expect(() => loadConfig(aggregatorEnv, { REDIS_SENTINELS: '10.0.0.1:26379', REDIS_CLUSTER_NODES: '10.0.0.2:7000' })).toThrow(
      new ConfigError('REDIS_SENTINELS: expected it or REDIS_CLUSTER_NODES, not both; both are set', 'REDIS_SENTINELS'),
    );
    expect(() => loadConfig(aggregatorEnv, { REDIS_SENTINELS: '10.0.0.1' })).toThrow(
      /^REDIS_SENTINELS: expected a comma-separated list of host:port/,
    );
  });

  it('never shows a secret in the error line: a token by its length only, a URL without its user name and password', () => {
    // The line goes to the log on every restart of a crash-looping app.
    expect(() => loadConfig(queryApiEnv, { ADMIN_OPERATOR_TOKEN: 'S3cretOperatorTokenTooShort' })).toThrow(
      /^ADMIN_OPERATOR_TOKEN: expected at least 32 characters of .*; got 27 characters \(not shown\)$/,
    );
    expect(() => loadConfig(collectorEnv, { METRICS_TOKEN: 'S3cretMetricsToken with-a-space' })).toThrow(
      /^METRICS_TOKEN: expected 16 to 512 printable characters .*; got 31 characters \(not shown\)$/,
    );
    const url = (REDIS_URL: string) => () => loadConfig(collectorEnv, { REDIS_URL });
    expect(url('http://default:Sup3rSecretPassw0rd@redis:6379')).toThrow(/; got "http:\/\/\*\*\*@redis:6379"$/);
    // A password holding `@` or `/`, or a URL without its scheme: all before the last `@` is hidden.
    expect(url('redis://default:p@ss/w0rd@redis:6379')).toThrow(/; got "redis:\/\/\*\*\*@redis:6379"$/);
    expect(url('default:Sup3rSecretPassw0rd@redis:6379')).toThrow(/; got "\*\*\*@redis:6379"$/);
    // ioredis reads a password from the query too.
    expect(url('redis://redis:0/?password=Sup3rSecret')).toThrow(/; got "redis:\/\/redis:0\/\?\*\*\*"$/);
    expect(() => loadConfig(writerEnv, { DYNAMODB_ENDPOINT: 'http://key:s3cret@dynamo:0' })).toThrow(
      /^DYNAMODB_ENDPOINT: .*; got "http:\/\/\*\*\*@dynamo:0"$/,
    );
  });

  it('refuses a REDIS_URL or DynamoDB endpoint its client cannot use, naming the variable', () => {
    const refused = (REDIS_URL: string, why: RegExp) => {
      expect(() => loadConfig(collectorEnv, { REDIS_URL }), REDIS_URL).toThrow(ConfigError);
      expect(() => loadConfig(collectorEnv, { REDIS_URL }), REDIS_URL).toThrow(why);
    };
    // new URL() throws on an unencoded `/` in the password (the app died with "TypeError: Invalid URL", password shown).
    refused('redis://:pa/ss@127.0.0.1:6379', /^REDIS_URL: expected a redis:\/\/ or rediss:\/\/ URL that parses: .*percent-encoded/);
    refused('redis://:pa%zz@127.0.0.1:6379', /URL that parses/); // decodeURIComponent throws on it
    refused('redis://127.0.0.1:0', /URL that parses: a port from 1 to 65535/);
    refused('redis://127.0.0.1:65536', /URL that parses: a port from 1 to 65535/);
    // ioredis sent SELECT NaN: the app died with "ReplyError: ERR value is not an integer or out of range".
    refused('redis://127.0.0.1:6379/notadb', /^REDIS_URL: expected .* whose path is empty or a database number/);
    refused('redis://127.0.0.1:6379/1/2', /whose path is empty or a database number/);
    refused('redis://127.0.0.1 :6379', /^REDIS_URL: expected a redis:\/\/ or rediss:\/\/ URL, e\.g\./);
    // Without a host ioredis connects to 127.0.0.1:6379, and beside REDIS_CLUSTER_NODES `rediss:///` lends TLS alone:
    // accepted before these checks, still accepted.
    for (const ok of [
      'redis://127.0.0.1:6379/',
      'redis://redis/15',
      'rediss://u:p%2Fw%40rd@[::1]:6380/2?family=6',
      'redis:///0',
      'rediss:///',
    ])
      expect(loadConfig(collectorEnv, { REDIS_URL: ok }).REDIS_URL).toBe(ok);
    // The AWS SDK's endpoint: an unparsable one was a TypeError at the first request; port 0 went to port 80.
    expect(() => loadConfig(writerEnv, { DYNAMODB_ENDPOINT: 'http://:pa/ss@127.0.0.1:8000' })).toThrow(
      /^DYNAMODB_ENDPOINT: expected an http\(s\):\/\/ URL that parses/,
    );
    expect(() => loadConfig(writerEnv, { DYNAMODB_ENDPOINT: 'http://127.0.0.1:0' })).toThrow(/^DYNAMODB_ENDPOINT: .* that parses/);
    expect(loadConfig(writerEnv, { DYNAMODB_ENDPOINT: 'https://dynamo.local/x' }).DYNAMODB_ENDPOINT).toBe('https://dynamo.local/x');
    // Cluster and Sentinel nodes: a port net.connect takes.
    for (const REDIS_CLUSTER_NODES of ['10.0.0.1:0', '10.0.0.1:7000,10.0.0.2:65536'])
      expect(() => loadConfig(collectorEnv, { REDIS_CLUSTER_NODES })).toThrow(
        /^REDIS_CLUSTER_NODES: expected host:port pairs with ports from 1 to 65535/,
      );
    expect(() => loadConfig(collectorEnv, { REDIS_SENTINELS: 's1:99999' })).toThrow(/^REDIS_SENTINELS: .*ports from 1 to 65535/);
  });

  it('says when a required variable is not set', () => {
    const s = z.object({ ...sharedEnvShape, NEEDED: z.string().min(1) });
    expect(() => loadConfig(s, {})).toThrowError(/^NEEDED: expected a string; it is not set$/);
  });

  it('treats empty strings as unset', () => {
    expect(loadConfig(writerEnv, { DYNAMODB_ENDPOINT: '' }).DYNAMODB_ENDPOINT).toBeUndefined();
  });
});
