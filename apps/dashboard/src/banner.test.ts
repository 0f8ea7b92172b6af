import { describe, expect, it } from 'vitest';
import { bannerText } from './banner';

describe('bannerText', () => {
  it('says nothing while every request is answered', () => {
    expect(bannerText({ unreachable: false }, 'en-US')).toBeUndefined();
  });

  it('says Tally is not reachable, keeping the time of the numbers shown', () => {
    expect(bannerText({ unreachable: true, shownAt: '10:00:02' }, 'en-US')).toBe(
      'Tally is not reachable; retrying. The numbers below are from 10:00:02.',
    );
    // An outage is the news even when another request was only rate limited.
    expect(bannerText({ unreachable: true, rateLimited: { retryInMs: 1_000 } }, 'en-US')).toBe('Tally is not reachable; retrying.');
  });

  it('says a store over its request rate limit is limited, not that Tally is down, and when it is asked again', () => {
    expect(bannerText({ unreachable: false, rateLimited: { retryInMs: 2_400, requestsPerSecond: 2 }, shownAt: '10:00:02' }, 'en-US')).toBe(
      'Too many requests for this store right now (Tally allows it 2 a second, over all its keys and open pages); retrying in 3 s. ' +
        'The numbers below are from 10:00:02.',
    );
    expect(bannerText({ unreachable: false, rateLimited: { retryInMs: 1_000 } }, 'en-US')).toBe(
      'Too many requests for this store right now; retrying in 1 s.',
    );
    expect(bannerText({ unreachable: false, rateLimited: { retryInMs: 0, requestsPerSecond: 0.5 } }, 'en-US')).toBe(
      'Too many requests for this store right now (Tally allows it 0.5 a second, over all its keys and open pages); retrying.',
    );
  });
});
