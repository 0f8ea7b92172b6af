import { existsSync } from 'node:fs';
import { join } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

/** The page `/` answers without a built dashboard. It names no path of the server (the log does: registerDashboard). */
const NOT_BUILT = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Tally</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>Tally query API</h1>
<p>The dashboard is not built: its directory has no <code>index.html</code> (the query API's log names the directory).</p>
<p>Build it from the repository root with <code>npx nx build dashboard</code> (or <code>npm run build --workspace apps/dashboard</code>),
or point <code>DASHBOARD_DIR</code> at a built dashboard, then restart the query API.</p>
<p>The API answers meanwhile: see <a href="/docs">/docs</a>.</p>
</body>
</html>
`;

/** Whether `dir` holds a built dashboard. */
export function dashboardBuilt(dir: string): boolean {
  return existsSync(join(dir, 'index.html'));
}

/**
 * Serves the built dashboard's files at `/` (same origin as the API, so no CORS). Without a build, `/` answers a
 * short page saying how to build it, which anyone may fetch: the directory looked in is logged, never shown there.
 * Returns whether the dashboard is served.
 */
export async function registerDashboard(app: FastifyInstance<any, any, any, any, any>, dir: string): Promise<boolean> {
  if (!dashboardBuilt(dir)) {
    app.log.info(
      { dashboardDir: dir },
      'the dashboard is not built (no index.html in dashboardDir): / answers a page saying how to build it',
    );
    app.get('/', { schema: { hide: true } }, async (_req, reply) => reply.type('text/html; charset=utf-8').send(NOT_BUILT));
    return false;
  }
  await app.register(fastifyStatic, { root: dir, prefix: '/', wildcard: true, index: 'index.html' });
  return true;
}
