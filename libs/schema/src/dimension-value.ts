import { encodeKeyValue, ID_PATTERN, MAX_ENCODED_VALUE_BYTES } from '@tally/key-layout';
import type { CompiledRules } from './compile';

/** A URL path: `/`, then no whitespace, controls, `?` or `#` (send the path alone, without query or fragment). */
const PATH = /^\/[^\s\p{Cc}?#]*$/u;

const ID_REASON = 'must be 1-128 characters of A-Z a-z 0-9 _ . : -';
const PATH_REASON = `must be a URL path: a "/", then no spaces, "?" or "#", at most ${MAX_ENCODED_VALUE_BYTES} bytes of UTF-8`;
/** A lone UTF-16 surrogate (`\ud800`, a legal JSON escape) has no UTF-8: the key would hold U+FFFD, merging paths. */
const UNPAIRED_REASON = 'must be well-formed Unicode: it holds a lone UTF-16 surrogate (\\ud800-\\udfff not in a pair)';

/**
 * A dimension value as events carry it on the queue and in keys: an id as sent, or a `path` dimension's path as
 * its base64url key (key-layout encodeKeyValue). `reason` says what is wrong with a value that is neither.
 */
export function normalizeDimValue(
  rules: CompiledRules,
  dim: string,
  value: string,
): { ok: true; value: string } | { ok: false; reason: string } {
  if (rules.dimFormat(dim) === 'path') {
    if (!PATH.test(value) || Buffer.byteLength(value, 'utf8') > MAX_ENCODED_VALUE_BYTES) return { ok: false, reason: PATH_REASON };
    if (!value.isWellFormed()) return { ok: false, reason: UNPAIRED_REASON };
    return { ok: true, value: encodeKeyValue(value) };
  }
  return ID_PATTERN.test(value) ? { ok: true, value } : { ok: false, reason: ID_REASON };
}
