import { connect, type AddressInfo } from 'node:net';
import { createLogger } from '@tally/observability';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { buildApp } from './app';
import { createBackpressure } from './backpressure';
import { createCollectorMetrics } from './metrics';

/** The collector app with stub deps: nothing here reaches Redis or DynamoDB (no request gets past the edge). */
async function stubApp() {
  const registry = new Registry();
  const backpressure = createBackpressure({ shards: [{ getWaitingCount: async () => 0 }], redis: { status: 'ready' }, maxDepth: 5 });
  return buildApp({
    log: createLogger({ name: 'expect-417', level: 'silent' }),
    registry,
    metrics: createCollectorMetrics(registry),
    intake: { limits: { maxEvents: 1000 } } as never,
    directory: {} as never,
    backpressure,
    maxBodyBytes: 1 << 20,
    isClosing: () => false,
    isReady: () => true,
  });
}

describe('collector: every answer of the edge is in /openapi.json (apps/collector/README.md)', () => {
  it('an Expect other than 100-continue: the 417 problem the edge answers is a status /openapi.json lists for POST /v1/events', async () => {
    const app = await stubApp();
    const openapi = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const out = await new Promise<string>((resolve, reject) => {
      let text = '';
      const c = connect(port, '127.0.0.1', () =>
        c.write('POST /v1/events HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]'),
      );
      c.on('data', (d: Buffer) => (text += d.toString('utf8')));
      c.on('error', reject);
      c.on('close', () => resolve(text));
    });
    await app.close();
    const status = out.split(' ')[1];
    expect(status).toBe('417');
    expect(Object.keys(openapi.paths['/v1/events'].post.responses)).toContain('417');
  });
});
