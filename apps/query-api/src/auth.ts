import { TenantsUnavailableError, type Principal, type TenantDirectory } from '@tally/tenants';
import type { FastifyRequest } from 'fastify';
import { HttpProblem, RETRY_AFTER_SECONDS } from './errors';

declare module 'fastify' {
  interface FastifyRequest {
    /** The tenant (store), scopes and time zone of the request's API key, set by the auth hook. */
    principal?: Principal;
  }
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;
const CHALLENGE = { 'www-authenticate': 'Bearer realm="tally"' };

/**
 * `Authorization: Bearer <key>` → the key's store, scopes and time zone; the key needs the `read` scope. The
 * store of every answer comes from the key only. A `store` query parameter naming any other store answers 404,
 * so probing another tenant is refused explicitly. Runs before the request is validated or its body read.
 */
export function authenticate(directory: TenantDirectory) {
  return async (req: FastifyRequest): Promise<void> => {
    const header = req.headers.authorization;
    if (header === undefined || header === '') {
      throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'missing Authorization header: send Authorization: Bearer <read API key>', undefined, CHALLENGE);
    }
    const m = BEARER.exec(header);
    if (!m) throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'the Authorization header must be "Bearer <API key>"', undefined, CHALLENGE);
    let principal: Principal | undefined;
    try {
      principal = await directory.authenticate(m[1]!);
    } catch (err) {
      if (!(err instanceof TenantsUnavailableError)) throw err;
      req.log.warn({ err: err.message }, 'cannot check an API key');
      throw new HttpProblem(
        503,
        'TALLY_ERR_UNAVAILABLE',
        'this API key cannot be checked right now (the key store is unavailable); retry later',
        undefined,
        { 'retry-after': String(RETRY_AFTER_SECONDS) },
      );
    }
    if (!principal) throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'unknown or revoked API key', undefined, CHALLENGE);
    if (!principal.scopes.includes('read')) {
      throw new HttpProblem(403, 'TALLY_ERR_FORBIDDEN', `this API key lacks the "read" scope (it has: ${principal.scopes.join(', ') || 'none'})`);
    }
    const asked = (req.query as Record<string, unknown> | undefined)?.['store'];
    if (asked !== undefined && asked !== principal.store) {
      // Same answer whether or not the other store exists: nothing about other tenants leaks.
      throw new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `store ${JSON.stringify(asked)} is not the store of this API key`, 'store');
    }
    req.principal = principal;
  };
}

/** The principal the auth hook set; routes behind it always have one. */
export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'not authenticated');
  return req.principal;
}
