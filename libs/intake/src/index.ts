export * from './errors';
export { createProducerConnection, PRODUCER_COMMAND_TIMEOUT_MS, waitForReady, type ProducerConnectionOptions } from './connection';
export {
  batchFingerprint,
  checkEvents,
  checkLimits,
  createIntake,
  DEFAULT_INTAKE_LIMITS,
  type BindOptions,
  type EnqueueOptions,
  type EnqueueResult,
  type Intake,
  type IntakeLimits,
  type IntakeOptions,
  type IntakeSource,
  type RetryOptions,
} from './intake';
