export * from './errors';
export { createProducerConnection, waitForReady, type ProducerConnectionOptions } from './connection';
export {
  batchFingerprint,
  createIntake,
  DEFAULT_INTAKE_LIMITS,
  type EnqueueOptions,
  type EnqueueResult,
  type Intake,
  type IntakeLimits,
  type IntakeOptions,
  type IntakeSource,
} from './intake';
