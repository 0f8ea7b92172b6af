import { describe, expect, it } from 'vitest';
import { measureRankingMemory } from './scale';

// The scale figure's memory of the daily rankings (top lists) and of the cache versions, at its quick run's sizes:
// used_memory is exact, so the figures are bounded (by what a zset member and a key can take), not only non-zero.
describe('measureRankingMemory (the scale figure: Redis bytes per ranking member and per cache version)', () => {
  it('measures the default rules’ 4 rankings of a store-day, small (a listpack) and large (a skiplist), and the cache versions', async () => {
    const small = await measureRankingMemory(100, 100, true);
    // A member of a small zset is its id and score in a listpack, plus its share of the key: a few bytes each.
    expect(small.bytesPerMember).toBeGreaterThan(4);
    expect(small.bytesPerMember).toBeLessThan(40);
    expect(small.bytesPerStoreDay).toBeCloseTo(4 * 100 * small.bytesPerMember, 6);
    // One cache version per visitor row acknowledged (100 a store; none for store, product or page rows): a key with
    // an integer and a TTL.
    expect(small.cacheVersions?.keys).toBe(100 * 100);
    expect(small.cacheVersions!.bytesPerKey).toBeGreaterThan(50);
    expect(small.cacheVersions!.bytesPerKey).toBeLessThan(300);
    // Past 128 members a zset is a skiplist and a hash table: several times the bytes per member.
    const large = await measureRankingMemory(5, 1000, false);
    expect(large.bytesPerMember).toBeGreaterThan(3 * small.bytesPerMember);
    expect(large.bytesPerMember).toBeLessThan(300);
    expect(large.cacheVersions).toBeUndefined();
  });
});
