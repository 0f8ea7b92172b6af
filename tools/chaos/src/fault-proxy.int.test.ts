import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { classifyError, createDynamoClient } from '@tally/dynamo';
import { createTestTable, startDynalite, type DynaliteHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NO_FAULTS, startFaultProxy, type FaultProxy } from './fault-proxy';

let dyn: DynaliteHandle;
let table: string;
let proxy: FaultProxy;

beforeAll(async () => {
  dyn = await startDynalite();
  table = await createTestTable(dyn.endpoint);
  proxy = await startFaultProxy({ target: dyn.endpoint, seed: 1, slowMs: [300, 301] });
});
afterAll(async () => {
  await proxy.close();
  await dyn.stop();
});

// One attempt per request and a 2 s deadline, so each fault is seen as the SDK reports it.
const client = () => createDynamoClient({ endpoint: proxy.url, region: 'us-east-1', maxAttempts: 1, requestTimeoutMs: 2_000 });
const direct = () => createDynamoClient({ endpoint: dyn.endpoint, region: 'us-east-1' });
const put = (c: ReturnType<typeof client>, pk: string) =>
  c.send(new PutItemCommand({ TableName: table, Item: { pk: { S: pk }, sk: { S: 'x' } } }));
const exists = async (pk: string) => {
  const d = direct();
  try {
    return (
      (await d.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: 'x' } }, ConsistentRead: true }))).Item !==
      undefined
    );
  } finally {
    d.destroy();
  }
};
const outcome = async (pk: string) => {
  const c = client();
  try {
    await put(c, pk);
    return 'ok';
  } catch (err) {
    return `${classifyError(err)}:${(err as Error).name}`;
  } finally {
    c.destroy();
  }
};

describe('fault proxy in front of dynalite', () => {
  it('forwards untouched without faults', async () => {
    proxy.setRates(NO_FAULTS);
    expect(await outcome('clean')).toBe('ok');
    expect(await exists('clean')).toBe(true);
  });

  it('throttles with the DynamoDB exception the SDK recognizes, without applying', async () => {
    proxy.setRates({ ...NO_FAULTS, throttle: 1 });
    expect(await outcome('throttled')).toBe('throttled:ProvisionedThroughputExceededException');
    expect(await exists('throttled')).toBe(false);
    expect(proxy.counts.throttle).toBe(1);
  });

  it('answers 500s, some after applying the request', async () => {
    proxy.setRates({ ...NO_FAULTS, error500: 1 });
    const applied: boolean[] = [];
    for (let i = 0; i < 12; i++) {
      expect(await outcome(`e500-${i}`)).toMatch(/^unavailable:/);
      applied.push(await exists(`e500-${i}`));
    }
    expect(applied).toContain(true);
    expect(applied).toContain(false);
  });

  it('drops connections, some after applying the request', async () => {
    proxy.setRates({ ...NO_FAULTS, drop: 1 });
    const applied: boolean[] = [];
    for (let i = 0; i < 12; i++) {
      expect(await outcome(`drop-${i}`)).toMatch(/^unavailable:/);
      applied.push(await exists(`drop-${i}`));
    }
    expect(applied).toContain(true);
    expect(applied).toContain(false);
  });

  it('answers slowly, and refuses everything while down', async () => {
    proxy.setRates({ ...NO_FAULTS, slow: 1 });
    const t0 = performance.now();
    expect(await outcome('slow')).toBe('ok');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    proxy.setRates(NO_FAULTS);
    proxy.setDown(true);
    expect(await outcome('down')).toMatch(/^unavailable:/);
    expect(await exists('down')).toBe(false);
    proxy.setDown(false);
    expect(await outcome('up-again')).toBe('ok');
  });
});
