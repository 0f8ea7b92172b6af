import type { Figure } from '../figure';
import { collectorIngest } from './collector-ingest';

/** Every figure `npm run bench` knows, in run order. Add a figure here. */
export const FIGURES: readonly Figure[] = [collectorIngest];
