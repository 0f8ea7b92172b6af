import { Validator } from '@seriousme/openapi-schema-validator';

/**
 * Validates an OpenAPI document against the official OpenAPI 3.1 schema; returns the errors (empty when valid).
 * A document of another version is an error too.
 */
export async function openApi31Errors(doc: unknown): Promise<string[]> {
  const version = (doc as { openapi?: unknown } | null)?.openapi;
  if (typeof version !== 'string' || !version.startsWith('3.1.')) return [`openapi is ${JSON.stringify(version)}, not 3.1.x`];
  const validator = new Validator();
  const res = await validator.validate(structuredClone(doc) as Record<string, unknown>);
  if (res.valid) return [];
  const errors = Array.isArray(res.errors) ? res.errors : [res.errors];
  return errors.map((e) => (typeof e === 'string' ? e : JSON.stringify(e)));
}
