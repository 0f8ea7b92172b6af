import { Counter } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createMetrics } from './index';

describe('createMetrics', () => {
  it('has default process metrics with the tally_ prefix and the app label', async () => {
    const { registry } = createMetrics({ app: 'collector' });
    const text = await registry.metrics();
    expect(text).toMatch(/^tally_process_cpu_user_seconds_total\{app="collector"\} \d/m);
    expect(text).toMatch(/^tally_nodejs_heap_size_used_bytes\{app="collector"\} \d/m);
    expect(text).not.toMatch(/^process_cpu/m);
  });

  it('puts the app label on app metrics too, and registries do not share metrics', async () => {
    const a = createMetrics({ app: 'collector' });
    const b = createMetrics({ app: 'query-api' });
    const accepted = new Counter({ name: 'tally_events_accepted_total', help: 'x', labelNames: ['type'], registers: [a.registry] });
    accepted.inc({ type: 'view' }, 3);
    expect(await a.registry.metrics()).toContain('tally_events_accepted_total{type="view",app="collector"} 3');
    expect(await b.registry.metrics()).not.toContain('tally_events_accepted_total');
    expect(a.registry.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });
});
