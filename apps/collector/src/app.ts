import swagger from '@fastify/swagger';
import { InvalidArgumentError, QueueFullError, QueueUnavailableError, TooManyEventsError, type Intake } from '@tally/intake';
import { createHttpApp, HttpProblem, type TallyHttpApp } from '@tally/http';
import type { Logger } from '@tally/observability';
import type { TenantDirectory } from '@tally/tenants';
import type { FastifyError } from 'fastify';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import { REDIS_DOWN_RETRY_AFTER_SECONDS, type Backpressure } from './backpressure';
import { JSON_TYPE, NDJSON_TYPE, registerEventParsers, tooManyEvents } from './body';
import { registerEventsRoute } from './events.route';
import type { IngestBudget } from './ingest-budget';
import type { CollectorMetrics } from './metrics';

export interface CollectorDeps {
  log: Logger;
  registry: Registry;
  metrics: CollectorMetrics;
  intake: Intake;
  directory: TenantDirectory;
  backpressure: Backpressure;
  /** Per-store ingest budget (429 to the store over it only); absent: no per-store limit. */
  budget?: IngestBudget;
  /** MAX_BODY_BYTES */
  maxBodyBytes: number;
  /** METRICS_TOKEN: `/metrics` asks for it; unset = open. */
  metricsToken?: string | undefined;
  /** True once shutdown began: /v1/events answers 503. */
  isClosing: () => boolean;
  /** /readyz: not closing, and Redis reachable as the events route sees it (backpressure.redisUp). */
  isReady: () => boolean | Promise<boolean>;
}

export type CollectorApp = TallyHttpApp;

/** The collector's HTTP app: POST /v1/events, /healthz, /readyz, /metrics and /openapi.json. No port: tests use inject. */
export async function buildApp(deps: CollectorDeps): Promise<CollectorApp> {
  const app = await createHttpApp({
    log: deps.log,
    registry: deps.registry,
    bodyLimit: deps.maxBodyBytes,
    bodyLimitName: 'MAX_BODY_BYTES',
    metricsToken: deps.metricsToken,
    appName: 'collector',
    notFoundHint: 'events go to POST /v1/events',
    mediaTypes: [`${JSON_TYPE} (a JSON array of events)`, `${NDJSON_TYPE} (one event per line)`],
    isClosing: deps.isClosing,
    ready: deps.isReady,
    mapError: mapCollectorError,
    onProblem: (problem) => {
      if (problem.code === 'TALLY_ERR_BACKPRESSURE') deps.metrics.backpressure.inc();
      if (problem.code !== 'TALLY_ERR_TOO_MANY_EVENTS') return;
      const count = Number(problem.extra['count'] ?? 0);
      deps.metrics.received.inc(count);
      deps.metrics.rejected.inc({ reason: 'too_many_events' }, count);
    },
  });
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
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  await registerEventsRoute(app, deps);
  return app;
}

function mapCollectorError(err: FastifyError): HttpProblem | undefined {
  if (err instanceof TooManyEventsError) return tooManyEvents(err.count, err.limit);
  if (err instanceof InvalidArgumentError) return new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', err.message);
  if (err instanceof QueueFullError) {
    return new HttpProblem(
      429,
      err.code,
      `the events queue shard of this store holds ${err.depth} waiting batches, over MAX_QUEUE_DEPTH (${err.limit}); nothing was accepted, retry later`,
      { extra: { depth: err.depth, limit: err.limit }, headers: { 'retry-after': String(err.retryAfterSeconds) } },
    );
  }
  if (err instanceof QueueUnavailableError) {
    return new HttpProblem(503, 'TALLY_ERR_UNAVAILABLE', 'the events queue (Redis) is unavailable; retry later', {
      headers: { 'retry-after': String(REDIS_DOWN_RETRY_AFTER_SECONDS) },
      cause: err,
    });
  }
  return undefined;
}
