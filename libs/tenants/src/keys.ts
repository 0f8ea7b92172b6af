import { createHash, randomBytes } from 'node:crypto';

/** What a key allows: writing events, reading its store's counters, administering its store. */
export const SCOPES = ['ingest', 'read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Every key Tally issues: `tly_` + 43 base64url characters (256 random bits). */
const KEY_PREFIX = 'tly_';
/**
 * What a presented key must look like to be worth a lookup: the one format generateKey has ever minted (keys are only
 * ever made by issueKey; there is no import of other formats). Anything else is refused before DynamoDB or the cache.
 */
const KEY_SHAPE = /^tly_[A-Za-z0-9_-]{43}$/;

export function generateKey(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

/** sha256 of the key, hex: the only form in which a key is stored. */
export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A short, public name of a key (the first 12 hex digits of its hash), for listing and revoking. */
export function keyIdOf(key: string): string {
  return hashKey(key).slice(0, 12);
}

export function looksLikeKey(key: string): boolean {
  return KEY_SHAPE.test(key);
}

export function isScope(s: string): s is Scope {
  return (SCOPES as readonly string[]).includes(s);
}
