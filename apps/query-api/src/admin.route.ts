import { adminRouteSchemas, operatorRouteSchemas } from '@tally/contracts';
import { actorOf, bearerAuth, HttpProblem, operatorAuth, principalOf, visitorRef } from '@tally/http';
import { scheduleRetentionRestamp, type QUEUE, type TallyQueues } from '@tally/queues';
import {
  changeTenant,
  createTenant,
  deleteStore,
  eraseVisitor,
  getTenant,
  issueKey,
  keyIdOf,
  listKeys,
  listTenantsPage,
  RETENTION_CHANGE_INTERVAL_MS,
  RETENTION_SETTLE_MS,
  RetentionChangeLimitedError,
  revokeKey,
  TenantError,
  type ErasureDeps,
  type TenantDb,
  type TenantDirectory,
  type TenantSettings,
} from '@tally/tenants';
import type { CompiledRules } from '@tally/schema';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { RETRY_AFTER_SECONDS } from './backends';

/** What the admin routes need: the same library functions as the tenants CLI, over the app's DynamoDB and Redis. */
export interface AdminDeps {
  db: TenantDb;
  /** Deleting stores and erasing visitors (libs/tenants): tombstones, queues, the Redis eraser. */
  erasure: Omit<ErasureDeps, 'db'>;
  /** The maintenance queue, where a change of historyMonths schedules the restamp of the store's visitor items. */
  maintenance: Pick<TallyQueues, typeof QUEUE.maintenance>;
  /** ADMIN_OPERATOR_TOKEN; unset = the operator routes answer 403. */
  operatorToken: string | undefined;
  /** The clock of settings changes (when historyMonths changed, and whether a store admin may change it again). Default `Date.now`. */
  now?: () => number;
}

interface AdminOptions {
  admin: AdminDeps;
  directory: TenantDirectory;
  rules: CompiledRules;
}

/**
 * A TenantError as the one problem format: unknown store, key or visitor 404, bad settings 400, an existing store (or
 * the id of one deleted less than its tombstone's life ago) 409, a visitor erasure under rules that key no entity by
 * the visitor alone (nothing of a visitor is erasable) 409, a store admin's change of historyMonths too soon after the
 * last one 429 (Retry-After: the seconds until it may change again).
 */
export function tenantProblem(err: unknown): HttpProblem | undefined {
  if (!(err instanceof TenantError)) return undefined;
  if (err instanceof RetentionChangeLimitedError) {
    const retryAfter = Math.max(1, Math.ceil(err.waitMs / 1_000));
    return new HttpProblem(429, 'TALLY_ERR_RATE_LIMITED', err.message, {
      field: 'historyMonths',
      headers: { 'retry-after': String(retryAfter) },
    });
  }
  switch (err.code) {
    case 'TALLY_ERR_TENANT_NOT_FOUND':
    case 'TALLY_ERR_KEY_NOT_FOUND':
    case 'TALLY_ERR_VISITOR_NOT_FOUND':
      return new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', err.message);
    case 'TALLY_ERR_TENANT_EXISTS':
    case 'TALLY_ERR_STORE_ID_RESERVED':
      return new HttpProblem(409, 'TALLY_ERR_CONFLICT', err.message, { field: 'store' });
    case 'TALLY_ERR_NOT_ERASABLE':
      return new HttpProblem(409, 'TALLY_ERR_CONFLICT', err.message);
    case 'TALLY_ERR_DELETION_INCOMPLETE':
      return new HttpProblem(503, 'TALLY_ERR_UNAVAILABLE', err.message, { headers: { 'retry-after': String(RETRY_AFTER_SECONDS) } });
    default: {
      const field = {
        TALLY_ERR_INVALID_STORE: 'store',
        TALLY_ERR_INVALID_TIME_ZONE: 'timeZone',
        TALLY_ERR_INVALID_SCOPES: 'scopes',
        TALLY_ERR_INVALID_LABEL: 'label',
        TALLY_ERR_INVALID_CURRENCY: 'currency',
        TALLY_ERR_INVALID_RETENTION: 'historyMonths',
        TALLY_ERR_INVALID_BUDGET: 'ingestEventsPerSecond',
        TALLY_ERR_INVALID_LIMIT: 'limit',
      }[err.code as string];
      return new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', err.message, field ? { field } : {});
    }
  }
}

/**
 * One audit line per admin or operator call, whatever its outcome: who (the operator, or a key by its public
 * id), what (method, route, target), when, and the status. Never a key: an issued key is only in the answer body.
 * A visitor id is logged as a hash prefix (the audit log should not keep the erased person's id in clear).
 */
function audit(app: FastifyInstance) {
  app.addHook('onResponse', async (req, reply) => {
    const params = { ...((req.params ?? {}) as Record<string, string>) };
    if (params['visitor'] !== undefined) params['visitor'] = visitorRef(params['visitor']);
    req.log.info(
      {
        audit: {
          actor: actorOf(req),
          store: req.principal?.store ?? params['store'] ?? (req.body as { store?: string } | undefined)?.store,
          action: `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`,
          target: params,
          status: reply.statusCode,
          at: new Date().toISOString(),
        },
      },
      'audit',
    );
  });
}

/**
 * Changes a store's settings (PATCH of a store admin or of the operator). A change of historyMonths schedules the
 * restamp of the store's visitor items already written (libs/tenants changeTenant, libs/queues
 * scheduleRetentionRestamp: a delayed job the dynamo-writer runs RETENTION_SETTLE_MS after the last change), and the
 * answer says from when (`retentionRestampAt`). Redis unreachable: 503 before anything changed. Each restamp is a
 * Scan of the whole table, so a store admin (`byStoreAdmin`) may change historyMonths once per
 * RETENTION_CHANGE_INTERVAL_MS (24 h) since its last change, whoever made that: sooner is 429 with nothing changed;
 * the operator is not limited.
 */
async function updateStore(admin: AdminDeps, req: FastifyRequest, store: string, settings: TenantSettings, byStoreAdmin: boolean) {
  const { tenant, history } = await changeTenant(admin.db, store, settings, {
    restamp: (changedAt) => scheduleRetentionRestamp(admin.maintenance, store, changedAt, RETENTION_SETTLE_MS),
    ...(admin.now && { now: admin.now }),
    ...(byStoreAdmin && { historyChangeEveryMs: RETENTION_CHANGE_INTERVAL_MS }),
  });
  if (!history) return tenant;
  const retentionRestampAt = new Date(history.changedAt + RETENTION_SETTLE_MS).toISOString();
  req.log.info(
    { store, historyMonths: tenant.historyMonths ?? null, before: history.before, retentionRestampAt },
    'retention restamp scheduled',
  );
  return { ...tenant, retentionRestampAt };
}

/** The store's own administration, with an `admin`-scope key: /v1/admin/… and DELETE /v1/visitors/{visitor}. */
export const storeAdminRoutes: FastifyPluginAsyncZod<AdminOptions> = async (app, { admin, directory, rules }) => {
  app.addHook('onRequest', bearerAuth(directory, 'admin'));
  audit(app);
  const { db } = admin;
  const storeOf = (req: FastifyRequest) => principalOf(req).store;

  app.get('/admin/store', { schema: adminRouteSchemas.getTenant }, async (req) => {
    const t = await getTenant(db, storeOf(req));
    if (!t || t.deletingAt) throw new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `store ${storeOf(req)} does not exist`);
    return t;
  });
  app.patch('/admin/store', { schema: adminRouteSchemas.updateTenant }, async (req) =>
    updateStore(admin, req, storeOf(req), req.body, true),
  );
  app.get('/admin/keys', { schema: adminRouteSchemas.listKeys }, async (req) => ({ keys: await listKeys(db, storeOf(req)) }));
  app.post('/admin/keys', { schema: adminRouteSchemas.issueKey }, async (req, reply) => {
    const store = storeOf(req);
    const key = await issueKey(db, store, req.body.scopes, req.body.label);
    const info = (await listKeys(db, store)).find((k) => k.keyId === keyIdOf(key))!;
    return reply.code(201).send({ ...info, key });
  });
  app.delete('/admin/keys/:keyId', { schema: adminRouteSchemas.revokeKey }, async (req) => revokeKey(db, storeOf(req), req.params.keyId));
  app.delete('/visitors/:visitor', { schema: adminRouteSchemas.eraseVisitor }, async (req) =>
    eraseVisitor({ ...admin.erasure, db, rules }, storeOf(req), req.params.visitor),
  );
};

/** The operator's routes, with the operator credential of the configuration: /v1/operator/stores… */
export const operatorRoutes: FastifyPluginAsyncZod<AdminOptions> = async (app, { admin, directory }) => {
  app.addHook('onRequest', operatorAuth(admin.operatorToken, directory));
  audit(app);
  const { db } = admin;

  app.get('/stores', { schema: operatorRouteSchemas.listStores }, async (req) => {
    const { tenants, next } = await listTenantsPage(db, req.query);
    return next === undefined ? { stores: tenants } : { stores: tenants, next };
  });
  app.post('/stores', { schema: operatorRouteSchemas.createStore }, async (req, reply) => {
    const { store, timeZone, currency, historyMonths, adminKey } = req.body;
    const t = await createTenant(db, store, {
      ...(timeZone === undefined ? {} : { timeZone }),
      ...(currency === undefined ? {} : { currency }),
      ...(historyMonths === undefined ? {} : { historyMonths }),
    });
    const key = adminKey ? await issueKey(db, store, ['admin'], 'first admin key') : undefined;
    return reply.code(201).send({ ...t, ...(key ? { adminKey: key } : {}) });
  });
  app.get('/stores/:store', { schema: operatorRouteSchemas.getStore }, async (req) => {
    const t = await getTenant(db, req.params.store);
    if (!t) throw new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `store ${req.params.store} does not exist`);
    return t;
  });
  app.patch('/stores/:store', { schema: operatorRouteSchemas.updateStore }, async (req) =>
    updateStore(admin, req, req.params.store, req.body, false),
  );
  app.delete('/stores/:store', { schema: operatorRouteSchemas.deleteStore }, async (req) =>
    deleteStore({ ...admin.erasure, db }, req.params.store),
  );
};
