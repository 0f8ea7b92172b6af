import type { Figure } from '../figure';
import { aggregatorFigure } from './aggregator-apply';
import { collectorIngest } from './collector-ingest';
import { drainFigure } from './drain';
import { durabilityFigure } from './durability';
import { freshnessFigure } from './freshness';
import { ingestClusterFigure } from './ingest-cluster';
import { ingestE2eFigure } from './ingest-e2e';
import { postgresPeerFigure } from './postgres-peer';
import { queryFigure } from './query';
import { scaleFigure } from './scale';
import { writeCostFigure } from './write-cost';

/** Every figure `npm run bench` knows, in run order. Add a figure here. */
export const FIGURES: readonly Figure[] = [
  collectorIngest,
  aggregatorFigure,
  ingestE2eFigure,
  ingestClusterFigure,
  postgresPeerFigure,
  durabilityFigure,
  freshnessFigure,
  queryFigure,
  writeCostFigure,
  drainFigure,
  scaleFigure,
];
