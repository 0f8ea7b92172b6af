import { createHash } from 'node:crypto';

/**
 * A deterministic BullMQ job id from parts (BullMQ ids must not contain ':' and must not be integers; pks may
 * contain ':'): `<kind>-<sha1 of the parts>`.
 */
export function jobIdFor(kind: string, ...parts: Array<string | number>): string {
  const h = createHash('sha1');
  for (const p of parts) h.update(String(p)).update('\u0000');
  return `${kind}-${h.digest('base64url')}`;
}
