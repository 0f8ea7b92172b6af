import type { IncomingMessage, ServerResponse } from 'node:http';
import { registerOpsRoutes } from '@tally/observability';
import { QueryError } from '@tally/query';
import { fastify, LogController, type FastifyError, type FastifyInstance, type FastifyReply, type RawServerDefault } from 'fastify';
import { hasZodFastifySchemaValidationErrors, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { authenticate } from './auth';
import { registerDashboard } from './dashboard';
import type { QueryApiDeps, RouteContext } from './deps';
import { registerDocs } from './docs';
import { badRequest, HttpProblem, isDynamoUnavailable, isRedisUnavailable, problemBody, unavailable } from './errors';
import { createQueryApiMetrics } from './metrics';
import { segmentsRoutes } from './segments.route';
import { seriesRoutes } from './series.route';
import { storeRoutes } from './store.route';
import { topRoutes } from './top.route';
import { totalsRoutes } from './totals.route';

export type QueryApiApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger, ZodTypeProvider>;

const OPS_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * The query API: /v1 routes behind read-key auth, the OpenAPI docs at /docs, ops routes, and the dashboard at
 * `/`. Returns the app ready to `listen` or `inject`.
 */
export async function buildApp(deps: QueryApiDeps): Promise<QueryApiApp> {
  const app = fastify({ loggerInstance: deps.log, logController: new LogController({ disableRequestLogging: true }) }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  const metrics = createQueryApiMetrics(deps.registry);
  const isClosing = deps.isClosing ?? (() => false);
  const ctx: RouteContext = { query: deps.query, limits: deps.limits, metrics, now: deps.now ?? Date.now };

  app.addHook('onRequest', async (req, reply) => {
    if (isClosing() && !OPS_ROUTES.has(req.routeOptions.url ?? '')) {
      reply.header('connection', 'close');
      throw new HttpProblem(503, 'TALLY_ERR_SHUTTING_DOWN', 'the query API is shutting down; retry on another instance', undefined, { 'retry-after': '1' });
    }
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const seconds = reply.elapsedTime / 1000;
    metrics.httpDuration.observe({ route, method: req.method, status_code: String(reply.statusCode) }, seconds);
    req.log.info({ method: req.method, route, url: req.url, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request');
  });

  app.setErrorHandler((err: FastifyError, req, reply) => sendProblem(reply, toProblem(err, req.log)));

  registerOpsRoutes(app, { registry: deps.registry, ready: async () => !isClosing() && (await deps.ready()) });
  await registerDocs(app);
  await app.register(
    async (v1) => {
      v1.addHook('onRequest', authenticate(deps.directory));
      await v1.register(storeRoutes, { ctx });
      await v1.register(seriesRoutes, { ctx });
      await v1.register(totalsRoutes, { ctx });
      await v1.register(topRoutes, { ctx });
      await v1.register(segmentsRoutes, { ctx });
    },
    { prefix: '/v1' },
  );
  const dashboard = await registerDashboard(app, deps.dashboardDir);

  app.setNotFoundHandler(async (req, reply) => {
    const path = req.url.split('?')[0]!;
    const wantsPage = req.method === 'GET' && /text\/html/.test(req.headers.accept ?? '') && !/^\/(v1|docs)(\/|$)/.test(path);
    // Client-side routes of the dashboard (a deep link such as /products/P1) get its index page.
    if (dashboard && wantsPage) return reply.type('text/html; charset=utf-8').sendFile('index.html');
    return sendProblem(reply, new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `no route ${req.method} ${path}; see /docs`));
  });

  await app.ready();
  return app;
}

function sendProblem(reply: FastifyReply, p: HttpProblem): FastifyReply {
  return reply.code(p.statusCode).headers(p.headers).type('application/json; charset=utf-8').send(JSON.stringify(problemBody(p)));
}

/** Any error → the answer: 400 naming the field, 401/403/404, 503 with Retry-After, else 500 (logged). */
function toProblem(err: FastifyError, log: FastifyInstance['log']): HttpProblem {
  if (err instanceof HttpProblem) return err;
  if (err instanceof QueryError) return badRequest(err.field, err.message);
  if (hasZodFastifySchemaValidationErrors(err)) {
    const issue = err.validation[0]!;
    const where = err.validationContext === 'body' ? 'body' : 'query';
    const unknownKeys = (issue.params as { keys?: string[] }).keys;
    if (issue.keyword === 'unrecognized_keys' && unknownKeys?.length) {
      const path = issue.instancePath.split('/').filter(Boolean);
      return badRequest([...path, unknownKeys[0]!].join('.'), `unknown ${where === 'body' ? 'field' : 'parameter'} ${JSON.stringify(unknownKeys[0])}`);
    }
    const field = issue.instancePath.split('/').filter(Boolean).join('.') || where;
    return badRequest(field, `${field}: ${issue.message}`);
  }
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return new HttpProblem(415, 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json', 'body');
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    // Fastify's own refusals: malformed JSON, empty body, body too large.
    return new HttpProblem(err.statusCode, 'TALLY_ERR_BAD_REQUEST', err.message, 'body');
  }
  if (isRedisUnavailable(err)) {
    log.warn({ err: err.message }, 'Redis unavailable');
    return unavailable('Redis is unavailable; retry later');
  }
  if (isDynamoUnavailable(err)) {
    log.warn({ err: err.message }, 'DynamoDB unavailable');
    return unavailable('DynamoDB is unavailable or throttling; retry later');
  }
  log.error({ err }, 'request failed');
  return new HttpProblem(500, 'TALLY_ERR_INTERNAL', 'internal error; see the query API log');
}
