import { describe, expect, it } from 'vitest';
import { ConfigError, aggregatorEnv, collectorEnv, loadConfig, sharedEnvShape, writerEnv } from './index';
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

  it('says when a required variable is not set', () => {
    const s = z.object({ ...sharedEnvShape, NEEDED: z.string().min(1) });
    expect(() => loadConfig(s, {})).toThrowError(/^NEEDED: expected a string; it is not set$/);
  });

  it('treats empty strings as unset', () => {
    expect(loadConfig(writerEnv, { DYNAMODB_ENDPOINT: '' }).DYNAMODB_ENDPOINT).toBeUndefined();
  });
});
