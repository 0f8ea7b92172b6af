/**
 * Exact decimal -> scaled integer conversion, so sums never drift: 19.99 with scale 2 is 1999, computed from
 * the decimal digits, never by floating-point multiplication.
 */
export type ScaleResult = { ok: true; units: string } | { ok: false; reason: string };

export const MAX_VALUE = 1e12;

/** The largest exponent (`1e400`, `1e-400`) a value may have: beyond it the digits are not worked out. */
const MAX_EXPONENT = 400;

const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

/** `value` is a JSON number or a decimal string; returns the integer number of 10^-scale units as a string. */
export function toUnits(value: number | string, scale: number): ScaleResult {
  return decimalToUnits(value, scale, MAX_VALUE);
}

/**
 * The same conversion for sums, which may pass the maximum of one value (a query answer of 38 digits): `max`
 * bounds the integer part (at most `max`, and exactly `max` only without a fraction) when given.
 */
export function decimalToUnits(value: number | string, scale: number, max?: number): ScaleResult {
  if (typeof value === 'number' && !Number.isFinite(value)) return { ok: false, reason: 'must be a finite number' };
  const text = typeof value === 'number' ? String(value) : value.trim();
  const m = DECIMAL.exec(text);
  if (!m) return { ok: false, reason: 'must be a decimal number' };
  if (m[1] === '-' && /[1-9]/.test(`${m[2]}${m[3] ?? ''}`)) return { ok: false, reason: 'must not be negative' };
  let intPart = m[2]!;
  let frac = m[3] ?? '';
  const exp = Number(m[4] ?? 0);
  if (Math.abs(exp) > MAX_EXPONENT) return { ok: false, reason: `must have an exponent between -${MAX_EXPONENT} and ${MAX_EXPONENT}` };
  if (exp > 0) {
    const shift = exp;
    frac = frac.padEnd(shift, '0');
    intPart += frac.slice(0, shift);
    frac = frac.slice(shift);
  } else if (exp < 0) {
    const shift = -exp;
    intPart = intPart.padStart(shift + 1, '0');
    frac = intPart.slice(intPart.length - shift) + frac;
    intPart = intPart.slice(0, intPart.length - shift);
  }
  frac = frac.replace(/0+$/, '');
  intPart = intPart.replace(/^0+(?=\d)/, '');
  if (frac.length > scale) {
    return { ok: false, reason: scale === 0 ? 'must be a whole number' : `has more than ${scale} decimal places` };
  }
  // Exactly: 1000000000000.01 is over the maximum, though its integer part is not.
  if (max !== undefined && (intPart.length > String(max).length || Number(intPart) > max || (Number(intPart) === max && frac !== ''))) {
    return { ok: false, reason: `must be at most ${max}` };
  }
  const units = (intPart + frac.padEnd(scale, '0')).replace(/^0+(?=\d)/, '');
  return { ok: true, units };
}

/** Formats integer units of a metric with `scale` decimals back to a decimal string: 1999, 2 -> "19.99". */
export function fromUnits(units: bigint | number | string, scale: number): string {
  const n = BigInt(units);
  if (scale === 0) return n.toString();
  const neg = n < 0n;
  const s = (neg ? -n : n).toString().padStart(scale + 1, '0');
  const out = `${s.slice(0, s.length - scale)}.${s.slice(s.length - scale)}`.replace(/\.?0+$/, '');
  return neg ? `-${out}` : out;
}
