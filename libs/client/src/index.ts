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
export { ReplicasBehindError, type RedisTarget } from '@tally/queues';
export { compileRules, defaultRules, loadRules, RulesError, type CompiledRules, type EventInput } from '@tally/schema';
export { createTallyClient, type TallyClient, type TallyClientOptions } from './client';
export { ClientClosedError } from './errors';
