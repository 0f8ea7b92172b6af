export { createRng, hashSeed, mulberry32, zipf, type Rng } from './rng';
export {
  BAD_EVENT_KINDS,
  generateLoad,
  goodEvents,
  priceCents,
  type BadEventKind,
  type LoadBatch,
  type LoadOptions,
  type StoreSpec,
} from './generator';
export {
  addCount,
  diffCounts,
  expectedCounts,
  expectedDistinct,
  scanCounters,
  type CounterTable,
  type CountsDiff,
  type DistinctTable,
  type ScannedTable,
  type StoreEvents,
} from './expected';
export {
  clientSender,
  httpSender,
  type ClientSenderOptions,
  type HttpSenderOptions,
  type RetryPolicy,
  type SendOptions,
  type SendOutcome,
  type Sender,
} from './senders';
export { countRetry, loadFleet, newLoadStats, runLoad, type FleetLoad, type LoadStats, type RunLoadOptions } from './driver';
export { alivePids, startFleet, type Fleet, type FleetApp, type FleetOptions, type StoreKeys } from './fleet';
export {
  backlog,
  checkCounts,
  checkQueryApi,
  checkTable,
  checkUniqueVisitors,
  keysEverywhere,
  waitForDrain,
  type Backlog,
  type DistinctCheck,
  type QueryCheck,
  type QueryCheckOptions,
  type TableCheck,
} from './verify';
export { DEMO_STORES, everyBucketRules } from './presets';
