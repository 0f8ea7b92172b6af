import { z } from 'zod';
import { bodyErrorResponses, intQueryParam, isoSchema, problemSchema as errorSchema, unwantedBodyResponse } from './common.schema';

// The admin API: a store's own administration with an `admin`-scope key (/v1/admin/…, DELETE /v1/visitors/{id}),
// and the operator's (/v1/operator/…) with the operator credential of the configuration (ADMIN_OPERATOR_TOKEN).

const SCOPE_NAMES = ['ingest', 'read', 'admin'] as const;
/** The store the tenant examples show. */
const TENANT_EXAMPLE = {
  store: 'DEMO',
  timeZone: 'Europe/Berlin',
  createdAt: '2026-03-15T12:00:00.000Z',
  currency: 'EUR',
  historyMonths: 13,
};
const storeId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/)
  .describe(
    "Store id: 1-128 of A-Z a-z 0-9 _ . : -, starting with a letter or digit, and not ending in :w<digits>, :events, :seal, :dynamo-writes or :maintenance (optionally followed by :<digits>), which can be the hash tags of Tally's own Redis keys",
  );

export const tenantSchema = z
  .object({
    store: z.string(),
    timeZone: z.string().describe('IANA time zone in which days are binned'),
    createdAt: isoSchema,
    currency: z.string().optional().describe('ISO 4217 code of the money metrics'),
    historyMonths: z
      .number()
      .int()
      .optional()
      .describe('Months of visitor history kept (this month and the N - 1 before); absent = for ever'),
    historyTrimmedBefore: z
      .string()
      .optional()
      .describe(
        'YYYY-MM-DD: visitor history before this day had expired when a history limit was lifted, and is never counted again (absent: no limit was ever lifted)',
      ),
    ingestEventsPerSecond: z
      .number()
      .int()
      .optional()
      .describe(
        "The store's ingest budget in events per second, set by the operator; absent = the collectors' INGEST_BUDGET_EVENTS_PER_SECOND",
      ),
    deletingAt: isoSchema
      .optional()
      .describe('Set while a deletion of the store is under way (or was interrupted: delete again to finish)'),
  })
  .describe('A store (tenant)')
  .meta({ examples: [TENANT_EXAMPLE] });

export const tenantSettingsSchema = z
  .object({
    timeZone: z.string().optional().describe('IANA time zone; counts already made keep their days'),
    currency: z.string().optional().describe('ISO 4217 code, e.g. EUR'),
    historyMonths: z
      .number()
      .int()
      .nullable()
      .optional()
      .describe(
        'Months of visitor history to keep (1-1200); null = for ever. A change also schedules the restamp of the visitor items already written (see retentionRestampAt in the answer)',
      ),
  })
  .strict()
  .meta({ examples: [{ timeZone: 'Europe/Paris', historyMonths: 13 }] });

/** The answer to a change of settings: the store, and when its visitor items are restamped if historyMonths changed. */
export const updatedTenantSchema = tenantSchema
  .extend({
    retentionRestampAt: isoSchema
      .optional()
      .describe(
        "Present when historyMonths changed: the earliest time the dynamo-writer restamps the store's visitor items already written (their DynamoDB TTL) with the new setting, RETENTION_SETTLE_MS (90 s) after the change, once every writer's cached setting has expired. Items written from then on get it as they are written. Another change before then postpones it (one restamp per store is pending at a time, applying the last setting); each restamp is a Scan of the whole table",
      ),
  })
  .describe('The store (tenant) as changed')
  .meta({ examples: [{ ...TENANT_EXAMPLE, retentionRestampAt: '2026-03-16T09:31:30.000Z' }] });

const storeSettingsSchema = tenantSettingsSchema
  .extend({
    ingestEventsPerSecond: z
      .number()
      .int()
      .nullable()
      .optional()
      .describe(
        "Ingest budget in events per second, 1-10,000,000 (collectors apply it within KEY_CACHE_TTL_MS); null = the collectors' INGEST_BUDGET_EVENTS_PER_SECOND",
      ),
  })
  .meta({ examples: [{ ingestEventsPerSecond: 5000 }] });

/** The key every admin example shows. */
const KEY_EXAMPLE = {
  keyId: '3f9a1c0b7d2e',
  store: 'DEMO',
  label: 'web shop',
  scopes: ['ingest'],
  revoked: false,
  createdAt: '2026-03-15T12:00:00.000Z',
};

export const keyInfoSchema = z
  .object({
    keyId: z.string().describe('Public id of the key: the first 12 hex digits of its SHA-256'),
    store: z.string(),
    label: z.string(),
    scopes: z.array(z.enum(SCOPE_NAMES)),
    revoked: z.boolean(),
    createdAt: isoSchema,
    revokedAt: isoSchema.optional(),
  })
  .describe('An API key as listed: never the key itself')
  .meta({ examples: [KEY_EXAMPLE] });

export const issueKeyBodySchema = z
  .object({
    scopes: z.array(z.enum(SCOPE_NAMES)).min(1).describe('What the key may do'),
    label: z.string().max(200).default('').describe('A name for people: printable ASCII'),
  })
  .strict()
  .meta({ examples: [{ scopes: ['ingest'], label: 'web shop' }] });

export const issuedKeySchema = keyInfoSchema
  .extend({ key: z.string().describe('The key: shown in this answer only, never again') })
  .meta({ examples: [{ ...KEY_EXAMPLE, key: 'tly_…' }] });
export const keyListSchema = z.object({ keys: z.array(keyInfoSchema) }).meta({ examples: [{ keys: [KEY_EXAMPLE] }] });

const keyIdParams = z
  .object({
    keyId: z
      .string()
      .describe(
        "A key id from the list, or any prefix of the key's SHA-256 of 6-64 lower-case hex digits that matches one key of the store; anything else is 404",
      ),
  })
  .strict();
/**
 * A visitor id as every id of the API: libs/key-layout ID_PATTERN (the segments route checks the same), kept here as
 * a literal so the contracts stay zod only (admin.int.test.ts checks the two are one).
 */
export const VISITOR_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;
const visitorParams = z
  .object({
    visitor: z
      .string()
      .regex(VISITOR_ID_PATTERN, 'a visitor id is 1-128 characters of A-Z a-z 0-9 _ . : -')
      .describe('Visitor id: 1-128 of A-Z a-z 0-9 _ . : -'),
  })
  .strict();
const storeParams = z.object({ store: z.string().describe('Store id') }).strict();

export const visitorErasureSchema = z
  .object({
    store: z.string(),
    visitor: z.string(),
    removed: z.object({
      dynamoItems: z
        .number()
        .int()
        .describe("The DynamoDB items (month items and TOTAL) of the visitor's rows: every entity keyed by the visitor id alone"),
      outboxEntries: z.number().int().describe('Counts folded but not yet written to DynamoDB'),
      bucketEntries: z.number().int().describe('Counts in the open and sealed Redis buckets'),
      cachedHistory: z.boolean().describe('Whether a cached history was dropped'),
      sketches: z
        .number()
        .int()
        .describe("The visitor rows' own distinct-count sketches not yet in DynamoDB (rules with a distinct metric on such an entity)"),
      rankings: z.number().int().describe('The daily rankings (top lists) the visitor was taken out of (rules that rank such an entity)'),
    }),
    tombstoneUntil: isoSchema.describe("Until when the visitor's events still in flight are dropped"),
  })
  .describe('What was erased')
  .meta({
    examples: [
      {
        store: 'DEMO',
        visitor: 'V42',
        removed: { dynamoItems: 3, outboxEntries: 4, bucketEntries: 2, cachedHistory: true, sketches: 0, rankings: 0 },
        tombstoneUntil: '2026-03-16T12:00:00.000Z',
      },
    ],
  });

export const storeDeletionSchema = z
  .object({
    store: z.string(),
    removed: z.object({
      dynamoItems: z.number().int().describe('Counter items of every entity'),
      apiKeys: z.number().int(),
      redisKeys: z.number().int().describe('Buckets, outboxes, dedupe records, caches, rankings'),
      queuedJobs: z.number().int(),
      failedJobs: z.number().int(),
    }),
    tombstoneUntil: isoSchema.describe("Until when the store's late batches are dropped"),
    reusableAt: isoSchema.describe(
      "From when the store id can be created again (its tombstone's expiry, DEDUPE_WINDOW_SECONDS and its slack after the deletion; creating it before is a 409)",
    ),
  })
  .describe('What was deleted')
  .meta({
    examples: [
      {
        store: 'DEMO',
        removed: { dynamoItems: 5120, apiKeys: 3, redisKeys: 812, queuedJobs: 12, failedJobs: 0 },
        tombstoneUntil: '2026-03-16T12:00:00.000Z',
        reusableAt: '2026-03-16T14:24:00.000Z',
      },
    ],
  });

export const createStoreBodySchema = z
  .object({
    store: storeId,
    timeZone: z.string().optional().describe('IANA time zone (default UTC)'),
    currency: z.string().optional().describe('ISO 4217 code of the money metrics, e.g. EUR (default: none)'),
    historyMonths: z
      .number()
      .int()
      .optional()
      .describe('Months of visitor history to keep, 1-1200 (this month and the N - 1 before); absent = for ever'),
    adminKey: z.boolean().default(false).describe('Also issue a first admin-scope key for the store (returned once)'),
  })
  .strict()
  .meta({ examples: [{ store: 'SHOP42', timeZone: 'Europe/Berlin', currency: 'EUR', adminKey: true }] });

export const createdStoreSchema = tenantSchema
  .extend({ adminKey: z.string().optional().describe('The admin key, when asked for: shown only in this answer') })
  .meta({
    examples: [{ store: 'SHOP42', timeZone: 'Europe/Berlin', createdAt: '2026-03-15T12:00:00.000Z', currency: 'EUR', adminKey: 'tly_…' }],
  });
/** The most stores one page of GET /v1/operator/stores holds. */
const MAX_STORES_PAGE = 1_000;

const storeListQuerySchema = z
  .object({
    limit: intQueryParam(1, MAX_STORES_PAGE, MAX_STORES_PAGE).describe(
      `Stores per page, 1-${MAX_STORES_PAGE} (default ${MAX_STORES_PAGE})`,
    ),
    after: z.string().min(1).max(128).optional().describe('The next of the page before: the stores after this store id'),
  })
  .strict();

export const storeListSchema = z
  .object({
    stores: z.array(tenantSchema).describe('In store id order'),
    next: z.string().optional().describe('Present when more stores follow: ask again with after=<next>'),
  })
  .meta({ examples: [{ stores: [{ store: 'DEMO', timeZone: 'Europe/Berlin', createdAt: '2026-03-15T12:00:00.000Z' }] }] });

const adminErrors = {
  400: errorSchema.describe('Bad input; `field` names the member at fault'),
  401: errorSchema.describe('Missing, unknown or revoked credential'),
  403: errorSchema.describe(
    'The credential may not call this route: a key without the admin scope; on operator routes any store key, or the routes are off (ADMIN_OPERATOR_TOKEN unset)',
  ),
  404: errorSchema.describe('Unknown store, key or visitor'),
  413: unwantedBodyResponse,
  500: errorSchema.describe('An unexpected error; the query API logs it'),
  503: errorSchema.describe(
    'Redis, DynamoDB or the key store is unreachable, a store deletion or visitor erasure must wait for running jobs (call again), or the API is shutting down; retry after Retry-After seconds (5; 1 while shutting down)',
  ),
} as const;

const admin = (operationId: string, summary: string) => ({ operationId, summary, tags: ['admin'], security: [{ bearer: [] }] });
const operator = (operationId: string, summary: string) => ({ operationId, summary, tags: ['operator'], security: [{ operator: [] }] });

export const adminRouteSchemas = {
  getTenant: { ...admin('getOwnStore', "The admin key's store and its settings"), response: { 200: tenantSchema, ...adminErrors } },
  updateTenant: {
    ...admin(
      'updateOwnStore',
      "Changes the store's time zone, currency or visitor-history retention (a change of the retention schedules the restamp of the visitor items already written: retentionRestampAt)",
    ),
    body: tenantSettingsSchema,
    response: {
      200: updatedTenantSchema,
      ...adminErrors,
      ...bodyErrorResponses,
      429: errorSchema.describe(
        "TALLY_ERR_RATE_LIMITED (field historyMonths): historyMonths changed less than 24 h ago (by an admin key of the store or by the operator); an admin key may change it once per 24 h, as each change makes Tally restamp the store's visitor items, a scan of the whole table. Nothing was changed; Retry-After: the seconds until it may change again",
      ),
    },
  },
  listKeys: { ...admin('listKeys', "The store's API keys (never the keys themselves)"), response: { 200: keyListSchema, ...adminErrors } },
  issueKey: {
    ...admin('issueKey', 'Issues a key for the store; the answer is the only time it is shown'),
    body: issueKeyBodySchema,
    response: { 201: issuedKeySchema, ...adminErrors, ...bodyErrorResponses },
  },
  revokeKey: {
    ...admin(
      'revokeKey',
      'Revokes a key of the store: it stops working within KEY_CACHE_TTL_MS while DynamoDB answers; during a DynamoDB outage a cached key keeps working',
    ),
    params: keyIdParams,
    response: {
      200: keyInfoSchema,
      ...adminErrors,
      404: errorSchema.describe(
        'TALLY_ERR_NOT_FOUND: the key id is not 6-64 lower-case hex digits, matches no key of the store, or matches several (give more digits)',
      ),
    },
  },
  eraseVisitor: {
    ...admin('eraseVisitor', 'Erases a visitor: their rows, counts not yet written and cached history; store and product aggregates stay'),
    params: visitorParams,
    response: {
      200: visitorErasureSchema,
      ...adminErrors,
      404: errorSchema.describe(
        'Nothing of the visitor was stored (no DynamoDB items, Redis counts or rankings); their in-flight events are dropped anyway, for DEDUPE_WINDOW_SECONDS (the detail says until when)',
      ),
      409: errorSchema.describe(
        "TALLY_ERR_CONFLICT: the installation's rollup rules (RULES_FILE) key no entity by the visitor id alone, so no visitor can be erased: nothing was erased, and no tombstone drops their in-flight events",
      ),
    },
  },
};

export const operatorRouteSchemas = {
  listStores: {
    ...operator(
      'listStores',
      'The stores, a page at a time (a Query of the tenant index; a table without that index is indexed first, once, by a Scan)',
    ),
    querystring: storeListQuerySchema,
    response: { 200: storeListSchema, ...adminErrors },
  },
  createStore: {
    ...operator('createStore', 'Creates a store (and, when asked, its first admin key)'),
    body: createStoreBodySchema,
    response: {
      201: createdStoreSchema,
      ...adminErrors,
      ...bodyErrorResponses,
      409: errorSchema.describe(
        'A store with that id exists already, or is being deleted, or was deleted and its id is not free yet (the detail says from when)',
      ),
    },
  },
  getStore: { ...operator('getStoreById', 'One store'), params: storeParams, response: { 200: tenantSchema, ...adminErrors } },
  updateStore: {
    ...operator(
      'updateStore',
      "Changes a store's ingest budget, time zone, currency or visitor-history retention (a change of the retention schedules the restamp of the visitor items already written: retentionRestampAt)",
    ),
    params: storeParams,
    body: storeSettingsSchema,
    response: { 200: updatedTenantSchema, ...adminErrors, ...bodyErrorResponses },
  },
  deleteStore: {
    ...operator(
      'deleteStore',
      'Deletes a store and all its data; resumable: while the store shows deletingAt (a deletion was interrupted), delete it again; 404 once the deletion finished',
    ),
    params: storeParams,
    response: {
      200: storeDeletionSchema,
      ...adminErrors,
      404: errorSchema.describe(
        'No such store, or its deletion finished already (the detail then says when, and from when its id is free)',
      ),
    },
  },
};
