import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDynamoClient, createDynamoMeter, getItem } from '@tally/dynamo';
import { closeQueues, createQueues, enqueue, QUEUE, type TallyQueues } from '@tally/queues';
import { defaultRules } from '@tally/schema';
import { createTestTable, waitFor } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';

const stack = useStack();
const queueSets: TallyQueues[] = [];
stack.defer(() => Promise.all(queueSets.map((q) => closeQueues(q))));
// Every row flushed after every bucket, so the test sees many writes quickly.
const rules = structuredClone(defaultRules) as any;
for (const e of Object.values(rules.entities) as any[]) e.flush = { kind: 'bucket' };
const rulesFile = join(mkdtempSync(join(tmpdir(), 'tally-rules-')), 'rules.json');
writeFileSync(rulesFile, JSON.stringify(rules));

describe('dynamo writer process', () => {
  for (const point of ['writer:after-update', 'writer:before-ack']) {
    it(`SIGKILLed at ${point}, then restarted: no count doubled or lost`, async () => {
      const table = await createTestTable(stack.dynalite.endpoint, { tenants: ['S'] });
      const prefix = point === 'writer:after-update' ? 'wau' : 'wba';
      const env = {
        DYNAMODB_TABLE: table,
        BUCKET_SECONDS: '1',
        JOB_LOCK_MS: '1500',
        KEY_PREFIX: prefix,
        RULES_FILE: rulesFile,
      };
      const queues = createQueues(stack.redis, { keyPrefix: prefix, shards: 1 });
      queueSets.push(queues);
      const agg = await stack.startApp('bucket-aggregator', { env });
      const writer = await stack.startApp('dynamo-writer', { env: { ...env, TALLY_CRASH_POINT: point } });
      const ts = Date.now();
      for (let i = 0; i < 5; i++) {
        await enqueue(queues, QUEUE.events, {
          batchId: `${prefix}-${i}`,
          store: 'S',
          receivedAt: ts,
          events: Array.from({ length: 20 }, (_, j) => ({ type: 'order', ts, value: '1.25', dims: { visitor: `V${j % 2}` } })),
        });
      }
      expect((await writer.process.exited).signal).toBe('SIGKILL');
      await writer.restart({ TALLY_CRASH_POINT: undefined });
      const deps = {
        client: createDynamoClient({ endpoint: stack.dynalite.endpoint, region: 'us-east-1' }),
        table,
        meter: createDynamoMeter(),
      };
      await waitFor(
        async () => {
          const total = await getItem(deps, 'S', 'TOTAL');
          return total?.attrs.get('o') === 100n && (await stack.redis.keys(`${prefix}:{S}:o:*`)).length === 0;
        },
        { timeoutMs: 30_000, message: 'all orders written' },
      );
      const total = await getItem(deps, 'S', 'TOTAL');
      expect(total!.attrs.get('o')).toBe(100n);
      expect(total!.attrs.get('r')).toBe(12500n);
      const v0 = await getItem(deps, 'S#visitor#V0', 'TOTAL');
      expect(v0!.attrs.get('o')).toBe(50n);
      expect(v0!.attrs.get('r')).toBe(6250n);
      // Quiet for another bucket: still exact (nothing rewritten later).
      await new Promise((r) => setTimeout(r, 1500));
      expect((await getItem(deps, 'S', 'TOTAL'))!.attrs.get('o')).toBe(100n);
      deps.client.destroy();
      await Promise.all([agg.stop(), writer.stop()]);
    });
  }
});
