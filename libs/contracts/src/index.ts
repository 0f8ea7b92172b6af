// The query API's contract: request and answer schemas shared by the API, the dashboard and the load generator.
// Browser-safe: zod only.
export * from './common.schema';
export * from './store.schema';
export * from './series.schema';
export * from './totals.schema';
export * from './top.schema';
export * from './segments.schema';

import type { z } from 'zod';
import type { errorSchema, valueSchema } from './common.schema';
import type { segmentsBodySchema, segmentsResponseSchema } from './segments.schema';
import type { seriesQuerySchema, seriesResponseSchema } from './series.schema';
import type { storeResponseSchema } from './store.schema';
import type { topQuerySchema, topResponseSchema } from './top.schema';
import type { totalsQuerySchema, totalsResponseSchema } from './totals.schema';

/** Answers as JSON carries them. */
export type ErrorAnswer = z.infer<typeof errorSchema>;
export type MetricValue = z.infer<typeof valueSchema>;
export type StoreAnswer = z.infer<typeof storeResponseSchema>;
export type SeriesAnswer = z.infer<typeof seriesResponseSchema>;
export type TotalsAnswer = z.infer<typeof totalsResponseSchema>;
export type TopAnswer = z.infer<typeof topResponseSchema>;
export type SegmentsAnswer = z.infer<typeof segmentsResponseSchema>;
/** Requests as a client builds them. */
export type SeriesRequest = z.input<typeof seriesQuerySchema>;
export type TotalsRequest = z.input<typeof totalsQuerySchema>;
export type TopRequest = z.input<typeof topQuerySchema>;
export type SegmentsRequest = z.input<typeof segmentsBodySchema>;
