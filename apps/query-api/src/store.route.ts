import { formatDate, localDate } from '@tally/key-layout';
import { entitiesCounting, keyedByOf, storeEntityOf } from '@tally/query';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { principalOf } from '@tally/http';
import type { RouteContext } from './deps';
import { storeRouteSchema } from '@tally/contracts';

/** GET /v1/store: the key's store, its time zone, today and currency, and the metrics and entities of the rules. */
export const storeRoutes: FastifyPluginAsyncZod<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { rules } = ctx.query;
  const storeEntity = storeEntityOf(rules);
  const metrics = Object.entries(rules.rules.metrics).map(([name, spec]) => {
    const distinctOn = Object.entries(rules.rules.entities)
      .filter(([, e]) => Object.hasOwn(e.distinct, name))
      .map(([e]) => (e === storeEntity ? 'store' : e));
    return {
      name,
      scale: spec.scale,
      description: spec.description ?? '',
      keyedBy: keyedByOf(rules, name),
      countedOn: entitiesCounting(rules, name),
      ...(distinctOn.length > 0 ? { distinctOn } : {}),
    };
  });
  // `store` first: it is how requests name the store row whatever the rules call it.
  const entities = ['store', ...Object.keys(rules.rules.entities).filter((e) => e !== storeEntity && e !== 'store')];

  app.get('/store', { schema: storeRouteSchema }, async (req) => {
    const { store, timeZone, currency } = principalOf(req);
    const now = ctx.now();
    return {
      store,
      timeZone,
      now: new Date(now).toISOString(),
      today: formatDate(localDate(now, timeZone)),
      currency: currency ?? null,
      metrics,
      entities,
    };
  });
};
