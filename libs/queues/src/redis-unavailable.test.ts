import { ReplyError } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { isRedisUnavailable } from './redis-unavailable';

describe('isRedisUnavailable', () => {
  it.each([
    new Error('Connection is closed.'),
    new Error("Stream isn't writeable and enableOfflineQueue options is false"),
    new Error("Cluster isn't ready and enableOfflineQueue options is false"),
    new Error('None of startup nodes is available'),
    new Error('Command timed out'),
    Object.assign(new Error('Reached the max retries per request limit (which is 20).'), { name: 'MaxRetriesPerRequestError' }),
    Object.assign(new Error('Failed to refresh slots cache.'), { name: 'ClusterAllFailedError' }),
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' }),
    new ReplyError('LOADING Redis is loading the dataset in memory'),
    new ReplyError('CLUSTERDOWN The cluster is down'),
    new ReplyError('TRYAGAIN Multiple keys request during rehashing of slot'),
    new ReplyError("READONLY You can't write against a read only replica."),
    new ReplyError('MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no'),
    new ReplyError('BUSY Redis is busy running a script.'),
    new ReplyError("OOM command not allowed when used memory > 'maxmemory'."),
    // A slot left mid-migration: ioredis follows TRYAGAIN (via a random node's MOVED) and ASK until it gives up.
    new Error('Too many Cluster redirections. Last error: ReplyError: TRYAGAIN Multiple keys request during rehashing of slot'),
    new Error('Too many Cluster redirections. Last error: ReplyError: MOVED 11711 127.0.0.1:36067'),
    new Error('Too many Cluster redirections. Last error: ReplyError: ASK 11711 127.0.0.1:36067'),
    // A reply rethrown as a plain Error keeps its message.
    new Error('LOADING Redis is loading the dataset in memory'),
  ])('%s: Redis is not available now', (err) => {
    expect(isRedisUnavailable(err)).toBe(true);
  });

  it.each([
    new ReplyError('ERR wrong number of arguments'),
    new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value'),
    new TypeError("Cannot read properties of undefined (reading 'length')"),
    new TypeError('Connection is closed.'),
    new Error('something else'),
  ])('%s: not an outage', (err) => {
    expect(isRedisUnavailable(err)).toBe(false);
  });

  it('is false for non-errors', () => {
    expect(isRedisUnavailable('Connection is closed.')).toBe(false);
    expect(isRedisUnavailable(undefined)).toBe(false);
  });
});
