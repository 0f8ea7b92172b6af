import { UnrecoverableError } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { dynamoWriteJobSchema, eventsJobSchema, maintenanceJobSchema } from './payloads.schema';
import { jobData } from './workers';

/** The reason a job with this payload fails with (jobData's UnrecoverableError), or `ok`. */
function reason(schema: Parameters<typeof jobData>[0], data: unknown, what: string): string {
  try {
    jobData(schema, { data }, what);
    return 'ok';
  } catch (err) {
    expect(err).toBeInstanceOf(UnrecoverableError);
    return (err as Error).message;
  }
}

describe('jobData', () => {
  it('returns the parsed payload; a bad one fails the job for good after onInvalid', () => {
    expect(jobData(dynamoWriteJobSchema, { data: { store: 'S1', pk: 'S1#product#P1' } }, 'flush payload')).toEqual({
      store: 'S1',
      pk: 'S1#product#P1',
    });
    let invalid = 0;
    expect(() => jobData(dynamoWriteJobSchema, { data: {} }, 'flush payload', () => invalid++)).toThrowError(UnrecoverableError);
    expect(invalid).toBe(1);
  });

  it('says where the first issue is, and nothing before its message for an issue of the payload as a whole', () => {
    const flush = (data: unknown) => reason(dynamoWriteJobSchema, data, 'flush payload');
    expect(flush({ store: 'S1', pk: 5 })).toBe('invalid flush payload: pk: Invalid input: expected string, received number');
    expect(flush({ store: 'S1' })).toBe('invalid flush payload: pk: Invalid input: expected string, received undefined');
    // At the root: no empty path, no double colon.
    expect(flush('S1#product#P1')).toBe('invalid flush payload: Invalid input: expected object, received string');
    expect(flush(null)).toBe('invalid flush payload: Invalid input: expected object, received null');
    expect(flush({ store: 'S1', pk: 'S1', extra: 1 })).toBe('invalid flush payload: Unrecognized key: "extra"');
    expect(reason(maintenanceJobSchema, 7, 'maintenance payload')).toBe(
      'invalid maintenance payload: Invalid input: expected object, received number',
    );
  });

  it('reads the same for the events payload: its root, its paths, and the rows checks that name their own place', () => {
    const batch = { batchId: 'b1', store: 'S1', receivedAt: 1 };
    const events = (data: unknown) => reason(eventsJobSchema, data, 'events payload');
    expect(events([])).toBe('invalid events payload: Invalid input: expected object, received array');
    expect(events({ ...batch, events: [{ type: 'view', ts: 1, dims: {} }], bogus: 1 })).toBe(
      'invalid events payload: Unrecognized key: "bogus"',
    );
    expect(events({ ...batch, events: [{ type: 5, ts: 1, dims: {} }] })).toBe(
      'invalid events payload: events.0.type: Invalid input: expected string, received number',
    );
    // checkFlatRows' message names the place within rows already: said once.
    expect(events({ ...batch, rows: ['S2', 1, '2023-001|v', 1], count: 1 })).toBe(
      'invalid events payload: rows.0: the row is not one of store S1',
    );
    expect(events({ ...batch, rows: [], count: 1 })).toBe('invalid events payload: rows: empty');
    expect(events({ ...batch, rows: ['S1', 1, '2023-001|v', 1], distinct: ['S1', 1, '2023-001|uv', 'AAAAAAA='], count: 1 })).toBe(
      'invalid events payload: distinct.3: not whole 8-byte member ids',
    );
    expect(events({ ...batch, rows: ['S1', 1, '2023-001|v', 1] })).toBe('invalid events payload: count: is required with rows');
  });
});
