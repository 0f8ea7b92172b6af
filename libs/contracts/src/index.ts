// The query API's contract: request and answer schemas shared by the API, the dashboard and the load generator.
// Browser-safe: zod only.
export * from './common.schema';
export * from './store.schema';
export * from './series.schema';
export * from './totals.schema';
export * from './top.schema';
export * from './segments.schema';
export * from './admin.schema';

import type { z } from 'zod';
import type { problemSchema } from './common.schema';
import type { seriesResponseSchema } from './series.schema';
import type { storeResponseSchema } from './store.schema';
import type { topResponseSchema } from './top.schema';

/** Answers as JSON carries them. */
export type StoreAnswer = z.infer<typeof storeResponseSchema>;
export type SeriesAnswer = z.infer<typeof seriesResponseSchema>;
export type TopAnswer = z.infer<typeof topResponseSchema>;
export type ProblemAnswer = z.infer<typeof problemSchema>;
