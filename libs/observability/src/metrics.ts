import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * A fresh prom-client registry with the default process metrics (`tally_process_cpu_seconds_total`,
 * `tally_nodejs_eventloop_lag_seconds`, …) and the default label `app` on every series.
 */
export function createMetrics(opts: { app: string }): { registry: Registry } {
  const registry = new Registry();
  registry.setDefaultLabels({ app: opts.app });
  collectDefaultMetrics({ register: registry, prefix: 'tally_' });
  return { registry };
}

/** Makers of counters, gauges and histograms registered on `registry`, for an app's metric table. */
export function metricsOn(registry: Registry) {
  const registers = [registry];
  return {
    counter: <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers }),
    gauge: (name: string, help: string) => new Gauge({ name, help, registers }),
    histogram: (name: string, help: string, buckets: number[]) => new Histogram({ name, help, buckets, registers }),
  };
}
