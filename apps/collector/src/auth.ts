import { TenantsUnavailableError, type Principal, type Scope, type TenantDirectory } from '@tally/tenants';
import type { FastifyRequest } from 'fastify';
import { HttpProblem } from './errors';

declare module 'fastify' {
  interface FastifyRequest {
    /** The tenant and scopes of the request's API key, set by the auth hook. */
    principal?: Principal;
  }
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;
const CHALLENGE = { 'www-authenticate': 'Bearer realm="tally"' };
/** Seconds a client should wait before retrying while DynamoDB cannot confirm a key. */
export const TENANTS_RETRY_AFTER_SECONDS = 5;

/**
 * `Authorization: Bearer <key>` → the key's tenant (store) and scopes, which must include `scope`. The store of
 * a request comes only from its key, never from the body. Runs before the body is read.
 */
export function authenticate(directory: TenantDirectory, scope: Scope) {
  return async (req: FastifyRequest): Promise<void> => {
    const header = req.headers.authorization;
    if (header === undefined || header === '') {
      throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'missing Authorization header: send Authorization: Bearer <API key>', {}, CHALLENGE);
    }
    const m = BEARER.exec(header);
    if (!m) throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'the Authorization header must be "Bearer <API key>"', {}, CHALLENGE);
    let principal: Principal | undefined;
    try {
      principal = await directory.authenticate(m[1]!);
    } catch (err) {
      if (!(err instanceof TenantsUnavailableError)) throw err;
      req.log.warn({ err }, 'cannot check an API key');
      throw new HttpProblem(
        503,
        'TALLY_ERR_UNAVAILABLE',
        'this API key cannot be checked right now (the key store is unavailable); retry later',
        {},
        { 'retry-after': String(TENANTS_RETRY_AFTER_SECONDS) },
      );
    }
    if (!principal) throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'unknown or revoked API key', {}, CHALLENGE);
    if (!principal.scopes.includes(scope)) {
      throw new HttpProblem(
        403,
        'TALLY_ERR_FORBIDDEN',
        `this API key lacks the "${scope}" scope (it has: ${principal.scopes.join(', ') || 'none'})`,
      );
    }
    req.principal = principal;
  };
}
