export { RulesError } from './errors';
export * from './rules.schema';
export { defaultRules, cheapestRules } from './default-rules';
export { compileRules, type CompiledRules, type CompiledCounter, type CompiledEventType } from './compile';
export * from './event.schema';
export { toUnits, fromUnits, MAX_VALUE, type ScaleResult } from './decimal';
export { validateEvents, parseTimestamp, type EventError, type ValidationLimits, type ValidationResult } from './validate';
export { rollup, type RowDeltas } from './rollup';
export { loadRules, loadRulesOrExit } from './load-rules';
