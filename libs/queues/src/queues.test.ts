import { describe, expect, it } from 'vitest';
import { dynamoWriteJobSchema, eventsJobSchema, jobIdFor, QUEUE, QUEUE_NAMES, QUEUE_SETTINGS, payloadSchemas } from './index';

describe('queues', () => {
  it('has settings and a schema for every queue', () => {
    expect(QUEUE_NAMES).toEqual(['events', 'seal', 'dynamo-writes']);
    for (const q of QUEUE_NAMES) {
      expect(QUEUE_SETTINGS[q].jobs.attempts).toBeGreaterThan(0);
      expect(payloadSchemas[q]).toBeDefined();
    }
    expect(QUEUE_SETTINGS[QUEUE.dynamoWrites].jobs.removeOnFail).toMatchObject({ age: 14 * 86_400 });
  });

  it('validates payloads', () => {
    const good = { batchId: 'b1', store: 'S1', receivedAt: 1, events: [{ type: 'view', ts: 1, dims: { product: 'P1' } }] };
    expect(eventsJobSchema.parse(good).source).toBe('http');
    expect(eventsJobSchema.safeParse({ ...good, store: 'S{1}' }).success).toBe(false);
    expect(eventsJobSchema.safeParse({ ...good, events: [] }).success).toBe(false);
    expect(eventsJobSchema.safeParse({ ...good, events: [{ type: 'view', ts: 'x', dims: {} }] }).success).toBe(false);
    expect(dynamoWriteJobSchema.parse({ store: 'S1', pk: 'S1#product#P:1' })).toEqual({ store: 'S1', pk: 'S1#product#P:1', reason: 'policy', waits: 0 });
  });

  it('derives job ids without colons, deterministically', () => {
    const a = jobIdFor('flush', 'S1', 'S1#product#a:b', 123);
    expect(a).toBe(jobIdFor('flush', 'S1', 'S1#product#a:b', 123));
    expect(a).not.toBe(jobIdFor('flush', 'S1', 'S1#product#a:b', 124));
    expect(a).not.toContain(':');
    expect(jobIdFor('x', 'ab', 'c')).not.toBe(jobIdFor('x', 'a', 'bc'));
  });
});
