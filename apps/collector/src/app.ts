import swagger from '@fastify/swagger';
import { InvalidArgumentError, QueueUnavailableError, TooManyEventsError, type Intake } from '@tally/intake';
import { registerOpsRoutes, type Logger } from '@tally/observability';
import type { TenantDirectory } from '@tally/tenants';
import { fastify, LogController, type FastifyError, type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import { REDIS_DOWN_RETRY_AFTER_SECONDS, type Backpressure } from './backpressure';
import { JSON_TYPE, NDJSON_TYPE, registerEventParsers, tooManyEvents } from './body';
import { HttpProblem, problemBody } from './errors';
import { registerEventsRoute } from './events.route';
import type { CollectorMetrics } from './metrics';

export interface CollectorDeps {
  log: Logger;
  registry: Registry;
  metrics: CollectorMetrics;
  intake: Intake;
  directory: TenantDirectory;
  backpressure: Backpressure;
  /** MAX_BODY_BYTES */
  maxBodyBytes: number;
  /** True once shutdown began: /v1/events answers 503. */
  isClosing: () => boolean;
  /** /readyz: Redis reachable and not closing. */
  isReady: () => boolean | Promise<boolean>;
}

export type CollectorApp = FastifyInstance<any, any, any, Logger, ZodTypeProvider>;

/** The collector's HTTP app: POST /v1/events, /healthz, /readyz, /metrics and /openapi.json. No port: tests use inject. */
export async function buildApp(deps: CollectorDeps): Promise<CollectorApp> {
  const app = fastify({
    loggerInstance: deps.log,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.maxBodyBytes,
    // A client that trickles a body this long is cut off.
    requestTimeout: 30_000,
    return503OnClosing: true,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Tally collector', version: '1', description: 'Event intake of Tally (see apps/collector/README.md).' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });

  registerEventParsers(app, { maxEvents: deps.intake.limits.maxEvents, maxBodyBytes: deps.maxBodyBytes });

  app.addHook('onRequest', async (req) => {
    if (deps.isClosing() && req.url.startsWith('/v1/')) {
      throw new HttpProblem(503, 'TALLY_ERR_SHUTTING_DOWN', 'this collector is shutting down; retry', {}, { 'retry-after': '1' });
    }
  });
  app.addHook('onResponse', async (req, reply) => {
    deps.metrics.httpDuration.observe(
      { route: req.routeOptions.url ?? 'unmatched', method: req.method, status_code: String(reply.statusCode) },
      reply.elapsedTime / 1_000,
    );
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const problem = toProblem(err, deps);
    if (problem.code === 'TALLY_ERR_TOO_MANY_EVENTS') {
      const count = Number(problem.extra['count'] ?? 0);
      deps.metrics.received.inc(count);
      deps.metrics.rejected.inc({ reason: 'too_many_events' }, count);
    }
    if (problem.statusCode >= 500 && problem.code === 'TALLY_ERR_INTERNAL') req.log.error({ err }, 'request failed');
    else req.log.debug({ code: problem.code, status: problem.statusCode }, problem.message);
    return reply.code(problem.statusCode).headers(problem.headers).send(problemBody(problem));
  });
  app.setNotFoundHandler((req, reply) => {
    const p = new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}; events go to POST /v1/events`);
    return reply.code(404).send(problemBody(p));
  });

  registerOpsRoutes(app, { registry: deps.registry, ready: deps.isReady });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  registerEventsRoute(app, deps);
  return app;
}

function toProblem(err: FastifyError, deps: CollectorDeps): HttpProblem {
  if (err instanceof HttpProblem) return err;
  if (err instanceof TooManyEventsError) return tooManyEvents(err.count, err.limit);
  if (err instanceof InvalidArgumentError) return new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', err.message);
  if (err instanceof QueueUnavailableError) {
    return new HttpProblem(503, 'TALLY_ERR_UNAVAILABLE', 'the events queue (Redis) is unavailable; retry later', {}, {
      'retry-after': String(REDIS_DOWN_RETRY_AFTER_SECONDS),
    });
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new HttpProblem(
        413,
        'TALLY_ERR_BODY_TOO_LARGE',
        `the request body is larger than MAX_BODY_BYTES (${deps.maxBodyBytes} bytes): split it into smaller requests`,
        { limit: deps.maxBodyBytes },
      );
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new HttpProblem(
        415,
        'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE',
        `Content-Type must be ${JSON_TYPE} (a JSON array of events) or ${NDJSON_TYPE} (one event per line)`,
      );
  }
  if (err.validation) return new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', err.message);
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return new HttpProblem(err.statusCode, 'TALLY_ERR_BAD_REQUEST', err.message);
  }
  return new HttpProblem(500, 'TALLY_ERR_INTERNAL', 'internal error; it was logged');
}
