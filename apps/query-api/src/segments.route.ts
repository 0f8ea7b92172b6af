import { ID_PATTERN } from '@tally/key-layout';
import { checkCountedMetric, evaluateSegments } from '@tally/query';
import { formatMetricName } from '@tally/schema';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { badRequest, principalOf } from '@tally/http';
import type { RouteContext } from './deps';
import { formatValue } from './params';
import { segmentsRouteSchema } from '@tally/contracts';

/** The entity whose rows segment rules read. */
const VISITOR_ENTITY = 'visitor';

/**
 * POST /v1/segments/evaluate: segment rules over one visitor's row. The visitor's DynamoDB history is read once
 * per session (cached for SESSION_IDLE_SECONDS) and merged with exactly the counts still in Redis.
 */
export const segmentsRoutes: FastifyPluginAsyncZod<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { rules } = ctx.query;

  app.post('/segments/evaluate', { schema: segmentsRouteSchema }, async (req) => {
    const { store, timeZone, historyMonths, historyTrimmedBefore } = principalOf(req);
    const { visitor, segments } = req.body;
    const spec = rules.rules.entities[VISITOR_ENTITY];
    if (!Object.hasOwn(rules.rules.entities, VISITOR_ENTITY) || spec?.key.length !== 1) {
      throw badRequest('visitor', `the rollup rules have no single-dimension "${VISITOR_ENTITY}" entity to evaluate segments on`);
    }
    if (!ID_PATTERN.test(visitor)) throw badRequest('visitor', 'a visitor id is 1-128 characters of A-Z a-z 0-9 _ . : -');
    segments.forEach((seg, i) =>
      seg.rules.forEach((rule, j) => {
        const field = `segments.${i}.rules.${j}`;
        checkCountedMetric(rules, VISITOR_ENTITY, formatMetricName(rule.metric, rule.key), `${field}.metric`, `${field}.key`);
      }),
    );
    const now = ctx.now();
    const r = await evaluateSegments(ctx.query, {
      store,
      pk: rules.pkOf(store, VISITOR_ENTITY, [visitor]),
      timeZone,
      now,
      segments,
      cacheTtlSeconds: ctx.limits.sessionIdleSeconds,
      historyMonths,
      historyTrimmedBefore,
    });
    ctx.metrics.segmentCache.inc({ result: r.cache });
    return {
      visitor,
      segments: r.segments.map((s) => ({
        name: s.name,
        matched: s.matched,
        rules: s.rules.map((rule) => {
          const scale = rules.scaleOf(rule.metric);
          return { ...rule, actual: scale > 0 ? rule.actual : formatValue(BigInt(rule.actual), 0) };
        }),
      })),
      cache: r.cache,
      asOf: new Date(now).toISOString(),
      dynamoRequests: r.dynamoRequests,
    };
  });
};
