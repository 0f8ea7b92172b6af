import { PROBLEM_SCHEMA } from '@tally/http';
import { NAMED_RANGES } from '@tally/query';
import { z } from 'zod';

/** Every error answer: RFC 9457 problem details; `field` is the query parameter or body path (segments.0.rules.1.op) at fault. */
export const errorSchema = PROBLEM_SCHEMA;

/** The error answers every /v1 route can give. */
export const errorResponses = {
  400: errorSchema.describe('Bad input; `field` names the parameter at fault'),
  401: errorSchema.describe('Missing, unknown or revoked API key'),
  403: errorSchema.describe('The API key lacks the read scope'),
  404: errorSchema.describe("Another store's data (`store` or `entity` naming a store that is not the key's)"),
  503: errorSchema.describe('Redis, DynamoDB or the key store is unreachable; retry after Retry-After seconds'),
} as const;

/**
 * A counter value: count metrics (scale 0) are JSON numbers (decimal strings only beyond 2^53); scaled metrics
 * (Revenue, scale 2) are exact decimal strings such as "19.99".
 */
export const valueSchema = z.union([z.number(), z.string()]).describe('A number for counts; an exact decimal string for scaled metrics (Revenue)');
export const valuesSchema = z.record(z.string(), valueSchema).describe('Metric name -> value');

export const RANGE_NAMES = [...NAMED_RANGES, 'allTime'] as const;
export type RangeName = (typeof RANGE_NAMES)[number];

export const rangeParam = z
  .enum(RANGE_NAMES)
  .optional()
  .describe("A range in the store's time zone, ending today (inclusive); allTime = everything. Instead of from/to.");
export const fromParam = z.string().optional().describe('First day, YYYY-MM-DD (with to, instead of range)');
export const toParam = z.string().optional().describe('Last day, YYYY-MM-DD, inclusive (with from)');
export const storeParam = z
  .string()
  .optional()
  .describe("Optional: the store you expect. The store always comes from the API key; naming any other store answers 404.");
export const metricsParam = z
  .union([z.string(), z.array(z.string())])
  .optional()
  .describe('Comma-separated metric names; keyed metrics with their key, e.g. ViewCount,Revenue,ProductViews#P1');

/** A point in time, ISO-8601. */
export const isoSchema = z.string().describe('ISO-8601 instant');
