import { createHash, timingSafeEqual } from 'node:crypto';
import {
  keyIdOf,
  TenantsUnavailableError,
  UnknownKeyLookupsThrottledError,
  type Principal,
  type Scope,
  type TenantDirectory,
} from '@tally/tenants';
import type { FastifyRequest } from 'fastify';
import { HttpProblem, unavailable } from './problem';

declare module 'fastify' {
  interface FastifyRequest {
    /** The store, scopes and time zone of the request's API key, set by the auth hook. */
    principal?: Principal;
    /** Set by operatorAuth: the request carries the operator credential. */
    operator?: boolean;
  }
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;
const CHALLENGE = { 'www-authenticate': 'Bearer realm="tally"' };
/** Seconds a client should wait before retrying while DynamoDB cannot confirm a key. */
export const KEY_STORE_RETRY_AFTER_SECONDS = 5;
/** Seconds a client should wait before retrying a key not looked up because too many unknown keys were (the directory's budget). */
export const KEY_LOOKUPS_THROTTLED_RETRY_AFTER_SECONDS = 1;

export const unauthorized = (detail: string) =>
  new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', detail, { field: 'authorization', headers: CHALLENGE });
const forbidden = (detail: string) => new HttpProblem(403, 'TALLY_ERR_FORBIDDEN', detail, { field: 'authorization' });

/** The credential of `Authorization: Bearer <credential>`; 401 when the header is missing (asking for `wanted`) or malformed. */
function bearerToken(req: FastifyRequest, credential: string, wanted = credential): string {
  const header = req.headers.authorization;
  if (header === undefined || header === '') throw unauthorized(`missing Authorization header: send Authorization: Bearer <${wanted}>`);
  const m = BEARER.exec(header);
  if (!m) throw unauthorized(`the Authorization header must be "Bearer <${credential}>"`);
  return m[1]!;
}

/**
 * An `onRequest` hook: `Authorization: Bearer <key>` → the key's store and scopes, which must include `scope`.
 * The store of a request comes only from its key, never from the body or the query. Register it in the scope
 * (a route or an encapsulated plugin) that needs it; it runs before the body is read.
 */
export function bearerAuth(directory: TenantDirectory, scope: Scope) {
  return async (req: FastifyRequest): Promise<void> => {
    const key = bearerToken(req, 'API key', `API key with the "${scope}" scope`);
    let principal: Principal | undefined;
    try {
      principal = await directory.authenticate(key);
    } catch (err) {
      if (!(err instanceof TenantsUnavailableError)) throw err;
      // Not 401: the key may be a real one issued a moment ago, which works once the budget has a lookup again.
      if (err instanceof UnknownKeyLookupsThrottledError)
        throw unavailable(
          'this API key is not cached and too many unknown keys are being checked right now; retry in a moment',
          KEY_LOOKUPS_THROTTLED_RETRY_AFTER_SECONDS,
          err,
        );
      throw unavailable(
        'this API key cannot be checked right now (the key store is unavailable); retry later',
        KEY_STORE_RETRY_AFTER_SECONDS,
        err,
      );
    }
    if (!principal) throw unauthorized('unknown or revoked API key');
    if (!principal.scopes.includes(scope))
      throw forbidden(`this API key lacks the "${scope}" scope (it has: ${principal.scopes.join(', ') || 'none'})`);
    req.principal = principal;
  };
}

/** The principal the auth hook set; a route behind the hook always has one. */
export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'not authenticated', { headers: CHALLENGE });
  return req.principal;
}

/** The credential of a request as an audit log may name it: `operator`, `key:<key id>` (never the key), or `anonymous`. */
export function actorOf(req: FastifyRequest): string {
  if (req.operator) return 'operator';
  const m = BEARER.exec(req.headers.authorization ?? '');
  return m ? `key:${keyIdOf(m[1]!)}` : 'anonymous';
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * An `onRequest` hook for operator routes: `Authorization: Bearer <operator token>`, compared in constant time
 * with the configured one. With no token configured the routes are off (403, never open); a store's API key
 * gets 403 (it is not an operator credential), anything else 401.
 */
export function operatorAuth(token: string | undefined, directory: TenantDirectory) {
  const expected = token ? sha256(token) : undefined;
  return async (req: FastifyRequest): Promise<void> => {
    if (!expected) throw forbidden('the operator routes are off: no operator credential is configured (ADMIN_OPERATOR_TOKEN)');
    const token = bearerToken(req, 'operator token');
    if (timingSafeEqual(sha256(token), expected)) {
      req.operator = true;
      return;
    }
    if (await directory.authenticate(token).catch(() => undefined))
      throw forbidden('a store API key cannot call operator routes: send the operator credential');
    throw unauthorized('unknown operator credential');
  };
}
