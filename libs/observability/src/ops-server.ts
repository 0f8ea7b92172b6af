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
}

/**
 * Mounts `GET /healthz` (200 `{status:'ok'}`: the process is alive), `GET /readyz` (200 `{status:'ready'}` or
 * 503 `{status:'not ready'}`) and `GET /metrics` (Prometheus text) on an app. Probes are logged at warn and up only.
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
    return reply
      .code(isReady ? 200 : 503)
      .header('cache-control', 'no-store')
      .send({ status: isReady ? 'ready' : 'not ready' });
  });

  app.get('/metrics', probe, async (_req, reply) => {
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
