import { z } from 'zod';

/** Ranges by name, in the store's time zone: yesterday is the day before today; every other one ends today (inclusive). */
export const NAMED_RANGES = ['today', 'yesterday', 'last7d', 'last30d', 'last3m', 'last12m', 'thisMonth', 'thisYear'] as const;
export type NamedRange = (typeof NAMED_RANGES)[number];

/** Every error answer: RFC 9457 problem details (served as application/problem+json). */
export const problemSchema = z
  .looseObject({
    type: z.literal('about:blank'),
    title: z.string().describe('the HTTP status phrase'),
    status: z.number().int(),
    code: z.string().describe('stable TALLY_ERR_* code'),
    detail: z.string().describe('what was wrong and where'),
    field: z
      .string()
      .optional()
      .describe('the request member at fault: a query parameter, a header, or a body path such as segments.0.rules.1.op'),
  })
  .describe('RFC 9457 problem details (application/problem+json)')
  .meta({
    examples: [
      {
        type: 'about:blank',
        title: 'Bad Request',
        status: 400,
        code: 'TALLY_ERR_BAD_REQUEST',
        field: 'metrics',
        detail: 'unknown metric "Views"; known: ViewCount, OrderCount',
      },
    ],
  });

/** A 413's problem: the body limit it names. */
const bodyTooLargeSchema = problemSchema.extend({ limit: z.number().int().describe('the body limit in bytes') });

/** The 413 of a route that takes no body. */
export const unwantedBodyResponse = bodyTooLargeSchema.describe(
  'This route takes no body: one declared (Content-Length) or sent (chunked) larger than the body limit of 1 MiB is refused, unread, and the connection closed; a smaller one is ignored',
);

/** The error answers every /v1 route can give. */
export const errorResponses = {
  400: problemSchema.describe(
    'Bad input; `field` names the parameter or body member at fault. On series, totals and top also a query that would read more DynamoDB items than MAX_ITEMS_PER_QUERY',
  ),
  401: problemSchema.describe('Missing, unknown or revoked API key'),
  403: problemSchema.describe('The API key lacks the read scope'),
  404: problemSchema.describe(
    "No such route, or another store's data: `store`, `entity=store:<id>` or `entity=store&ids=<id>` naming a store that is not the key's (`field` says which)",
  ),
  413: unwantedBodyResponse,
  429: problemSchema
    .extend({
      requestsPerSecond: z.number().describe("the store's request rate limit (QUERY_RATE_LIMIT_PER_SECOND)"),
      windowSeconds: z.number().int().describe('the length of the windows it is counted in (QUERY_RATE_WINDOW_SECONDS)'),
    })
    .describe(
      "TALLY_ERR_RATE_LIMITED: the key's store made more requests than its rate limit allows in this window, over all its keys and every replica; retry after Retry-After seconds (the rest of the window)",
    ),
  500: problemSchema.describe('An unexpected error; the query API logs it'),
  503: problemSchema.describe(
    'Redis, DynamoDB or the key store is unreachable (Retry-After: 5), too many API keys that are not cached are being checked (Retry-After: 1), or the API is shutting down (Retry-After: 1); retry after Retry-After seconds',
  ),
} as const;

/** The error answers of a route that takes a JSON body, beside errorResponses. */
export const bodyErrorResponses = {
  413: bodyTooLargeSchema.describe('The body, once decompressed (gzip and br bodies are taken), is over the body limit of 1 MiB'),
  415: problemSchema.describe(
    'The body is not application/json (TALLY_ERR_UNSUPPORTED_MEDIA_TYPE), or its Content-Encoding is not gzip or br (TALLY_ERR_UNSUPPORTED_ENCODING)',
  ),
} as const;

/**
 * A counter value: count metrics (scale 0) are JSON numbers (decimal strings only beyond 2^53); scaled metrics
 * (Revenue, scale 2) are exact decimal strings such as "19.99".
 */
export const valueSchema = z
  .union([z.number(), z.string()])
  .describe('A number for counts; an exact decimal string for scaled metrics (Revenue)');
export const valuesSchema = z
  .record(z.string(), valueSchema)
  .describe(
    'Metric name -> value. UniqueVisitors is the number of distinct visitors of the period, never a sum of days: exact while every day, month, year or all-time sketch read for it holds at most 300 visitors, else a HyperLogLog estimate (standard error 0.81%)',
  );

/**
 * The distinct-count metric of the default rules: distinct visitors of a store or a product per day, month, year,
 * all time or any range (the rules' `distinct`; ask for it by name in `metrics`).
 */
export const UNIQUE_VISITORS = 'UniqueVisitors';

export const RANGE_NAMES = [...NAMED_RANGES, 'allTime'] as const;
export type RangeName = (typeof RANGE_NAMES)[number];

export const rangeParam = z
  .enum(RANGE_NAMES)
  .optional()
  .describe(
    "A range in the store's time zone: yesterday is the day before today, every other named range ends today (inclusive); allTime = everything. Instead of from/to.",
  );
const fromParam = z.string().optional().describe("First day, YYYY-MM-DD in the store's time zone (with to, instead of range)");
const toParam = z
  .string()
  .optional()
  .describe("Last day, YYYY-MM-DD in the store's time zone, inclusive (with from); from <= to, at most 3,660 days in all");
export const storeParam = z
  .string()
  .optional()
  .describe('Optional: the store you expect. The store always comes from the API key; naming any other store answers 404.');
export const metricsParam = z
  .union([z.string(), z.array(z.string())])
  .optional()
  .describe(
    'Comma-separated metric names, at most 50 different ones; keyed metrics with their key, e.g. ViewCount,Revenue,ProductViews#P1,UniqueVisitors',
  );

/**
 * A whole-number query parameter from `min` to `max` (at most 2^53 - 1), in decimal digits only: `0x10`, `1e1`, ` 5`
 * and `1.5` are refused (z.coerce.number took the first three), a value past `max` names `max` however many digits
 * it has (one given twice: the edge says so). Absent: `fallback`.
 */
export function intQueryParam(min: number, max: number, fallback: number) {
  const range = `a whole number from ${min} to ${max}, in decimal digits`;
  const int = z.number().int().min(min).max(max);
  return z.preprocess((value, ctx) => {
    // Given twice (an array): left to the number check, which the edge answers "is given twice; give it once".
    if (typeof value === 'string' && !/^[0-9]+$/.test(value)) {
      // Cut as the edge of the apps (libs/http) shows a value: its first 37 characters, quoted, then "...".
      const quoted = JSON.stringify(value);
      ctx.addIssue({
        code: 'custom',
        input: value,
        message: `must be ${range}, got ${quoted.length > 40 ? `${quoted.slice(0, 37)}...` : quoted}`,
      });
    } else if (typeof value === 'string') {
      const n = Number(value);
      // Past 2^53 the number's own bound (int()) would come first: "at most 9007199254740991".
      if (n <= max) return n;
      ctx.addIssue({ code: 'too_big', origin: 'number', maximum: max, inclusive: true, input: value, message: `must be at most ${max}` });
    }
    return value;
  }, int.default(fallback));
}

/** A point in time, ISO-8601. */
export const isoSchema = z.string().describe('ISO-8601 instant');

/** The parameters of every read over a range of days besides the range itself: from/to, and the expected store. */
export const rangeParams = { from: fromParam, to: toParam, store: storeParam };

/** One point's or item's values, and which of them are estimates. */
export const valuesFields = {
  values: valuesSchema,
  estimated: z
    .array(z.string())
    .optional()
    .describe('The metrics whose value here is an estimate (see estimated); absent when every value here is exact'),
};

/** What every answer over a range of days (series, totals) says besides its values. */
export const rangeAnswerFields = {
  store: z.string(),
  timeZone: z.string(),
  range: z.enum(RANGE_NAMES).nullable().describe('The named range, or null for from/to'),
  from: z
    .string()
    .nullable()
    .describe(
      'First day (YYYY-MM-DD); null for allTime, except for visitors of a store with a history limit: there allTime and earlier dates are cut to the months kept, and from/to give the range so cut',
    ),
  to: z
    .string()
    .nullable()
    .describe('Last day (YYYY-MM-DD, inclusive); null for allTime, except for visitors of a store with a history limit (then today)'),
  metrics: z.array(z.string()),
  estimated: z
    .array(z.string())
    .default([]) // an answer of a query API from before it (a rolling upgrade) reads as all exact
    .describe(
      'The metrics of the answer any of whose values is an estimate, not an exact count: a distinct count (UniqueVisitors) is a HyperLogLog estimate (standard error 0.81%) when any day, month, year or all-time sketch read for it holds more than 300 visitors. Empty when every value is exact.',
    ),
  asOf: isoSchema.describe('When the answer was read: DynamoDB plus every count in Redis until then'),
  dynamoRequests: z.number().int().describe('DynamoDB requests made to answer'),
};
