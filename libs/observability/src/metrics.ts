import { Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
}

/**
 * A fresh prom-client registry with the default process metrics (`tally_process_cpu_seconds_total`,
 * `tally_nodejs_eventloop_lag_seconds`, …) and the default label `app` on every series.
 */
export function createMetrics(opts: { app: string }): Metrics {
  const registry = new Registry();
  registry.setDefaultLabels({ app: opts.app });
  collectDefaultMetrics({ register: registry, prefix: 'tally_' });
  return { registry };
}
