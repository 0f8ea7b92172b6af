export { NO_FAULTS, startFaultProxy, type FaultCounts, type FaultProxy, type FaultProxyOptions, type FaultRates } from './fault-proxy';
export { chaosEnv, chaosSettings, type ChaosSettings } from './chaos-config';
export { runChaos, type ChaosResult } from './chaos';
