import { z } from 'zod';
import {
  errorResponses,
  intQueryParam,
  isoSchema,
  problemSchema,
  RANGE_NAMES,
  rangeParam,
  rangeParams,
  valueSchema,
} from './common.schema';

/** Longest range a top list covers: the daily rankings are read day by day. */
export const MAX_TOP_DAYS = 92;
export const MAX_TOP_LIMIT = 100;
/** TOP_MAX_MEMBERS by default (the query API's config), for the descriptions. */
const TOP_MAX_MEMBERS_DEFAULT = 300_000;
/**
 * How far back a top list reaches by default, for the descriptions: readTop (@tally/query) refuses a `from` more than
 * TOP_HISTORY_DAYS - 2 days (how long a day's ranking is kept, 100 by default, less a day's margin) before today.
 */
const TOP_MAX_AGE_DAYS = 98;

export const topQuerySchema = z
  .object({
    entity: z.string().describe('A ranked entity (product and page in the default rules)'),
    metric: z
      .string()
      .describe(
        'An unkeyed counter the entity counts, e.g. ViewCount (another, or a distinct count such as UniqueVisitors, is 400 naming metric)',
      ),
    range: rangeParam.describe(
      `A named range (default last30d), or from/to instead, covering at most ${MAX_TOP_DAYS} days and starting at most ${TOP_MAX_AGE_DAYS} days before today in the store's time zone (by default: TOP_HISTORY_DAYS - 2): allTime and last12m are always 400, thisYear once it passes ${MAX_TOP_DAYS} days, an older from is 400 naming from, and so is a range whose daily rankings hold more than TOP_MAX_MEMBERS ids in all (${TOP_MAX_MEMBERS_DEFAULT.toLocaleString('en-US')} by default)`,
    ),
    ...rangeParams,
    limit: intQueryParam(1, MAX_TOP_LIMIT, 10).describe(`Items to return, 1-${MAX_TOP_LIMIT} (default 10)`),
  })
  .strict();

export const topResponseSchema = z
  .object({
    store: z.string(),
    entity: z.string(),
    metric: z.string(),
    range: z.enum(RANGE_NAMES).nullable(),
    from: z.string().describe("First day ranked (YYYY-MM-DD); a visitor entity's range starts no earlier than the store's history limit"),
    to: z.string().describe('Last day ranked (YYYY-MM-DD, inclusive)'),
    items: z
      .array(
        z.object({
          id: z.string().describe('The entity id (for a page: the base64url key of its path)'),
          path: z.string().optional().describe('For an entity keyed by a path (page): the path, decoded'),
          value: valueSchema,
        }),
      )
      .describe('Sorted by exact value, highest first'),
    asOf: isoSchema.describe('When the answer was read: DynamoDB plus every count in Redis until then'),
    dynamoRequests: z.number().int().describe('DynamoDB requests made to answer'),
  })
  .meta({
    examples: [
      {
        store: 'DEMO',
        entity: 'product',
        metric: 'ViewCount',
        range: 'last7d',
        from: '2026-03-09',
        to: '2026-03-15',
        items: [
          { id: 'P1', value: 310 },
          { id: 'P7', value: 122 },
        ],
        asOf: '2026-03-15T12:00:00.000Z',
        dynamoRequests: 1,
      },
    ],
  });

export const topRouteSchema = {
  operationId: 'getTop',
  summary: 'The top entities by a metric: candidates from the rankings of every bucket, exact values from DynamoDB plus Redis',
  description: `Candidates come from every bucket, the open one included, so an entity counted a moment ago is listed. Values are exact; equal values are listed by id. Pages (entities keyed by a path) carry their decoded path. The daily rankings are kept for a while only (TOP_HISTORY_DAYS, by default 100 days): a range starting more than ${TOP_MAX_AGE_DAYS} days before today (in the store's time zone) is 400 naming from, never a list ranked from the days left, and so is one starting before the days whose rankings were all kept that long (a raised TOP_HISTORY_DAYS reaches further back as they accumulate). One request ranks at most TOP_MAX_MEMBERS ids of the daily rankings, summed over the days (${TOP_MAX_MEMBERS_DEFAULT.toLocaleString('en-US')} by default: a 30-day list of up to 10,000 different ids a day): past it the answer is 400 naming from, asking for a narrower range, rather than a union that would hold up Redis for every store.`,
  tags: ['query'],
  querystring: topQuerySchema,
  response: {
    200: topResponseSchema,
    ...errorResponses,
    400: problemSchema.describe(
      `Bad input; \`field\` names the parameter at fault. Also a range the top lists cannot rank (TALLY_ERR_BAD_REQUEST): over ${MAX_TOP_DAYS} days (\`range\`), starting before the daily rankings kept (\`from\`), or whose daily rankings hold more than TOP_MAX_MEMBERS ids in all (\`from\`: narrow the range); and, as for series and totals, one that would read more DynamoDB items than MAX_ITEMS_PER_QUERY`,
    ),
  },
};
