import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { fastify, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { within } from './within';

export type ReadyCheck = () => boolean | Promise<boolean>;

export interface OpsRoutesOptions {
  registry: Registry;
  /** True when the process can do its work (Redis reachable, not shutting down, …). */
  ready: ReadyCheck;
  /** A ready check that takes longer than this counts as not ready. Default 2000 ms. */
  readyTimeoutMs?: number;
  /** METRICS_TOKEN: when set, `/metrics` answers only `Authorization: Bearer <token>`, 401 to anything else. */
  metricsToken?: string | undefined;
  /** The 401's error (an app's own problem format); default an `application/problem+json` body of its own. */
  unauthorized?: (detail: string) => Error;
  /** /readyz's 503 when not ready (an app's own problem format); default an `application/problem+json` body of its own. */
  unavailable?: (detail: string) => Error;
}

/** The detail of /readyz's 503. */
const NOT_READY_DETAIL = 'not ready: the process cannot do its work now (see its log)';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** True when the request bears `Authorization: Bearer <token>` (compared in constant time). */
function bearsToken(authorization: string | undefined, token: string): boolean {
  const given = /^Bearer +(\S+) *$/i.exec(authorization ?? '')?.[1];
  return given !== undefined && timingSafeEqual(digest(given), digest(token));
}

/**
 * Mounts `GET /healthz` (200 `{status:'ok'}`: the process is alive), `GET /readyz` (200 `{status:'ready'}` or, as
 * every error answer, a 503 problem `TALLY_ERR_UNAVAILABLE`) and `GET /metrics` (Prometheus text; only with the bearer
 * token when `metricsToken` is set) on an app. Probes are logged at warn and up only.
 */
export function registerOpsRoutes(app: FastifyInstance<any, any, any, any, any>, opts: OpsRoutesOptions): void {
  const readyTimeoutMs = opts.readyTimeoutMs ?? 2_000;
  const probe = { logLevel: 'warn' as const };

  app.get('/healthz', probe, async (_req, reply) => reply.header('cache-control', 'no-store').send({ status: 'ok' }));

  app.get('/readyz', probe, async (req, reply) => {
    let isReady = false;
    try {
      isReady = await within(Promise.resolve(opts.ready()), readyTimeoutMs, 'ready check gave no answer');
    } catch (err) {
      req.log.warn({ err }, 'ready check failed');
    }
    reply.header('cache-control', 'no-store');
    if (isReady) return reply.send({ status: 'ready' });
    if (opts.unavailable) throw opts.unavailable(NOT_READY_DETAIL);
    return reply
      .code(503)
      .type('application/problem+json; charset=utf-8')
      .send({ type: 'about:blank', title: 'Service Unavailable', status: 503, code: 'TALLY_ERR_UNAVAILABLE', detail: NOT_READY_DETAIL });
  });

  app.get('/metrics', probe, async (req, reply) => {
    if (opts.metricsToken !== undefined && !bearsToken(req.headers.authorization, opts.metricsToken)) {
      const detail = '/metrics needs Authorization: Bearer <METRICS_TOKEN>';
      if (opts.unauthorized) throw opts.unauthorized(detail);
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .type('application/problem+json')
        .send({ type: 'about:blank', title: 'Unauthorized', status: 401, code: 'TALLY_ERR_UNAUTHORIZED', detail });
    }
    const body = await opts.registry.metrics();
    return reply.header('content-type', opts.registry.contentType).header('cache-control', 'no-store').send(body);
  });
}

export interface StartOpsServerOptions extends OpsRoutesOptions {
  host: string;
  /** 0 = any free port (see the returned `port`). */
  port: number;
  log: Logger;
}

export interface OpsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** A small HTTP server with only the ops routes, for worker apps that serve nothing else. */
export async function startOpsServer(opts: StartOpsServerOptions): Promise<OpsServer> {
  const log = opts.log.child({ component: 'ops-server' });
  const app = fastify({ loggerInstance: log });
  registerOpsRoutes(app, opts);
  await app.listen({ host: opts.host, port: opts.port });
  return { port: (app.server.address() as AddressInfo).port, close: () => app.close() };
}
