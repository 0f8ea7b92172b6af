import { describe, expect, it } from 'vitest';
import { compareToThreshold } from './segments';

describe('compareToThreshold', () => {
  it('compares counts past 2^53 exactly (a double makes 2^53 + 1 equal to 2^53)', () => {
    expect(compareToThreshold(9007199254740993n, 0, 9007199254740992)).toBe(1);
    expect(compareToThreshold(9007199254740992n, 0, 9007199254740992)).toBe(0);
    expect(compareToThreshold(9007199254740991n, 0, 9007199254740992)).toBe(-1);
    // 38 digits: the largest sum a bucket holds.
    expect(compareToThreshold(10n ** 38n - 1n, 0, 1e38)).toBe(-1);
    expect(compareToThreshold(10n ** 38n, 0, 1e38)).toBe(0);
  });

  it("takes the threshold as the decimal it prints as, in the metric's units (Revenue 100 = 100.00)", () => {
    expect(compareToThreshold(9007199254740993n, 2, 90071992547409.92)).toBe(1);
    expect(compareToThreshold(9007199254740992n, 2, 90071992547409.92)).toBe(0);
    expect(compareToThreshold(10000n, 2, 100)).toBe(0);
    expect(compareToThreshold(2001n, 2, 20.01)).toBe(0);
    // 0.1 + 0.2 prints as 0.30000000000000004: above 30 cents.
    expect(compareToThreshold(30n, 2, 0.1 + 0.2)).toBe(-1);
  });

  it('takes more decimals than the scale, exponents and negative thresholds', () => {
    expect(compareToThreshold(2001n, 2, 20.005)).toBe(1);
    expect(compareToThreshold(2000n, 2, 20.005)).toBe(-1);
    expect(compareToThreshold(0n, 0, 5e-324)).toBe(-1);
    expect(compareToThreshold(1n, 2, 1e-7)).toBe(1);
    expect(compareToThreshold(10n ** 21n, 0, 1e21)).toBe(0);
    expect(compareToThreshold(10n ** 23n, 2, 1e21)).toBe(0);
    expect(compareToThreshold(0n, 0, 1.7976931348623157e308)).toBe(-1);
    expect(compareToThreshold(0n, 0, -1)).toBe(1);
    expect(compareToThreshold(0n, 2, -0)).toBe(0);
    expect(compareToThreshold(0n, 0, -1e-7)).toBe(1);
  });
});
