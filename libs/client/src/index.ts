export {
  createProducerConnection,
  IdempotencyConflictError,
  InvalidArgumentError,
  QueueFullError,
  QueueUnavailableError,
  TooManyEventsError,
  UnknownStoreError,
  ValidationError,
  type EnqueueOptions,
  type IntakeLimits,
  type ProducerConnectionOptions,
} from '@tally/intake';
export { ReplicasBehindError } from '@tally/queues';
export { createTallyClient, type TallyClient, type TallyClientOptions } from './client';
