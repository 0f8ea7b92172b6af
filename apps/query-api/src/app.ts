import { bearerAuth, createHttpApp, badRequest, HttpProblem, registerStoreRateLimit, timesGiven, type TallyHttpApp } from '@tally/http';
import { QueryError } from '@tally/query';
import type { FastifyError, FastifyRequest } from 'fastify';
import { operatorRoutes, storeAdminRoutes, tenantProblem } from './admin.route';
import { backendProblem } from './backends';
import { registerDashboard } from './dashboard';
import type { QueryApiDeps, RouteContext } from './deps';
import { registerDocs } from './docs';
import { createQueryApiMetrics } from './metrics';
import { notOwnStore } from './params';
import { segmentsRoutes } from './segments.route';
import { seriesRoutes } from './series.route';
import { storeRoutes } from './store.route';
import { topRoutes } from './top.route';
import { totalsRoutes } from './totals.route';

export type QueryApiApp = TallyHttpApp;

/**
 * The query API: /v1 routes behind read-key auth and each store's request rate limit, the OpenAPI docs at /docs, ops
 * routes, and the dashboard at `/`. Returns the app ready to `listen` or `inject`.
 */
export async function buildApp(deps: QueryApiDeps): Promise<QueryApiApp> {
  let dashboard = false;
  const app = await createHttpApp({
    log: deps.log,
    registry: deps.registry,
    appName: 'query API',
    metricsToken: deps.metricsToken,
    notFoundHint: 'see /docs',
    mediaTypes: ['application/json'],
    logRequests: true,
    isClosing: deps.isClosing ?? (() => false),
    ready: deps.ready,
    mapError: (err: FastifyError, req) =>
      err instanceof QueryError ? badRequest(err.field, err.message) : (tenantProblem(err) ?? backendProblem(err) ?? noSuchFile(err, req)),
    notFound: (req, reply) => {
      const path = req.url.split('?')[0]!;
      const wantsPage = req.method === 'GET' && /text\/html/.test(req.headers.accept ?? '') && !/^\/(v1|docs)(\/|$)/.test(path);
      // Client-side routes of the dashboard (a deep link such as /products/P1) get its index page.
      if (!dashboard || !wantsPage) return false;
      void reply.type('text/html; charset=utf-8').sendFile('index.html');
      return true;
    },
  });
  const metrics = createQueryApiMetrics(deps.registry);
  const ctx: RouteContext = { query: deps.query, limits: deps.limits, metrics, now: deps.now ?? Date.now };

  await registerDocs(app);
  await app.register(
    async (v1) => {
      v1.addHook('onRequest', bearerAuth(deps.directory, 'read'));
      v1.addHook('onRequest', ownStoreOnly);
      // After the key is known (its hooks run before the limiter's): counted by store, a request with no valid key never counts.
      if (deps.rateLimit)
        await registerStoreRateLimit(v1, { ...deps.rateLimit, registry: deps.registry, settingName: 'QUERY_RATE_LIMIT_PER_SECOND' });
      await v1.register(storeRoutes, { ctx });
      await v1.register(seriesRoutes, { ctx });
      await v1.register(totalsRoutes, { ctx });
      await v1.register(topRoutes, { ctx });
      await v1.register(segmentsRoutes, { ctx });
    },
    { prefix: '/v1' },
  );
  if (deps.admin) {
    const opts = { admin: deps.admin, directory: deps.directory, rules: deps.query.rules };
    await app.register(storeAdminRoutes, { ...opts, prefix: '/v1' });
    await app.register(operatorRoutes, { ...opts, prefix: '/v1/operator' });
  }
  dashboard = await registerDashboard(app, deps.dashboardDir);

  await app.ready();
  return app;
}

/**
 * A path the dashboard's static files refuse to look up (`..`, `.` or empty segments such as `//etc/passwd`, a NUL as in
 * `/index.html%00.js`): @fastify/static and @fastify/send throw 403 "Forbidden" (or 400), which the edge would answer
 * with the code of a 400 and a detail that says nothing. No file is served there: 404, as for a file that is not there.
 */
function noSuchFile(err: FastifyError, req: FastifyRequest): HttpProblem | undefined {
  if (err instanceof HttpProblem) return undefined;
  const refused =
    err.code === 'FST_STATIC_FORBIDDEN_PATH' || (req.routeOptions.url === '/*' && (err.statusCode === 400 || err.statusCode === 403));
  return refused ? new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `no such file: ${req.url.split('?')[0]}`) : undefined;
}

/**
 * The store of every answer comes from the key only. A `store` query parameter naming any other store answers
 * 404, the same whether or not that store exists: nothing about other tenants leaks. One given twice, or empty, names
 * no store: 400 (this hook runs before the routes' schemas).
 */
async function ownStoreOnly(req: FastifyRequest): Promise<void> {
  const asked = (req.query as Record<string, unknown> | undefined)?.['store'];
  if (Array.isArray(asked)) throw badRequest('store', `store: is given ${timesGiven(asked.length)}; give it once`);
  if (asked === '') throw badRequest('store', 'store: is empty; name the store of the API key, or leave store out');
  if (asked !== undefined && asked !== req.principal!.store) throw notOwnStore(asked, 'store');
}
