import { KeyLayoutError } from './errors';
import { ID_PATTERN } from './names';

/**
 * Key values that are not ids. A page path (`/shop/shoes/red`) holds `/` and may hold any character, while a key
 * value sits inside pks (`STORE#page#<value>`), Redis keys and fields, where `#`, `|` and `:`-joined names are
 * separators. Such a value is stored as its UTF-8 bytes in base64url without padding (RFC 4648 §5: A-Z a-z 0-9
 * `-` `_`), a subset of the id characters, so the key layout and its separators stay exactly as they are and the
 * encoded value is a valid id everywhere ids are checked. Answers decode it.
 */

/** Longest raw value, in UTF-8 bytes, whose encoding fits an id (128 characters = 96 bytes of base64url). */
export const MAX_ENCODED_VALUE_BYTES = 96;

/** The id that stands for `raw` in keys. Throws KeyLayoutError when `raw` is empty or longer than 96 UTF-8 bytes. */
export function encodeKeyValue(raw: string): string {
  const bytes = Buffer.from(raw, 'utf8');
  if (bytes.length === 0 || bytes.length > MAX_ENCODED_VALUE_BYTES) {
    throw new KeyLayoutError(`a key value must be 1-${MAX_ENCODED_VALUE_BYTES} bytes of UTF-8, not ${bytes.length}`);
  }
  return bytes.toString('base64url');
}

/** The raw value of an id made by encodeKeyValue; undefined when `id` is not such an encoding. */
export function decodeKeyValue(id: string): string | undefined {
  if (!ID_PATTERN.test(id) || !/^[A-Za-z0-9_-]+$/.test(id) || id.length % 4 === 1) return undefined;
  const bytes = Buffer.from(id, 'base64url');
  // Only the canonical encoding decodes (no trailing bits set), and only valid UTF-8.
  if (bytes.toString('base64url') !== id) return undefined;
  const raw = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  return Buffer.from(raw, 'utf8').equals(bytes) ? raw : undefined;
}
