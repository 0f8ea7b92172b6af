import type { Figure } from '../figure';
import { aggregatorFigure } from './aggregator-apply';
import { collectorIngest } from './collector-ingest';
import { writeCostFigure } from './write-cost';

/** Every figure `npm run bench` knows, in run order. Add a figure here. */
export const FIGURES: readonly Figure[] = [collectorIngest, aggregatorFigure, writeCostFigure];
