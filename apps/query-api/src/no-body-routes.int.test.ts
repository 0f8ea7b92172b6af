import { BucketEraser } from '@tally/buckets';
import { PROBLEM_SCHEMA } from '@tally/http';
import { closeQueues, createQueues, QUEUE, queueShards, type TallyQueues } from '@tally/queues';
import { issueKey } from '@tally/tenants';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, useFixture } from '../test/fixture';
import type { QueryApiApp } from './app';

// The routes that take no body (the DELETEs, the GETs) ignore one sent anyway (libs/http edge): no answer their OpenAPI
// operation does not document comes of its Content-Type, Content-Encoding or size.

const OPERATOR = 'op_'.padEnd(40, 'x');
const f = useFixture();
let queues: TallyQueues;
let app: QueryApiApp;
let admin: string;
let read: string;
let openapi: { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };

beforeAll(async () => {
  queues = createQueues(f.redis, { keyPrefix: 'q', shards: 1 });
  app = await f.app({
    admin: {
      db: f.db,
      erasure: {
        eraser: new BucketEraser({ redis: f.redis, buckets: f.buckets }),
        queues: [...queueShards(queues, QUEUE.events), ...queueShards(queues, QUEUE.dynamoWrites)],
        tombstoneSeconds: 3_600,
        activeJobsTimeoutMs: 2_000,
      },
      maintenance: queues,
      operatorToken: OPERATOR,
    },
  });
  ({ read } = await f.tenant('SHOP_D'));
  admin = await issueKey(f.db, 'SHOP_D', ['admin'], 'no-body admin');
  openapi = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
});
afterAll(async () => closeQueues(queues));

/** The answer, and whether the operation's OpenAPI entry documents its status. */
async function answer(method: 'DELETE' | 'GET', url: string, path: string, headers: Record<string, string>, payload?: string) {
  const r = await app.inject({ method, url, headers, ...(payload !== undefined && { payload }) });
  const documented = openapi.paths[path]?.[method.toLowerCase()]?.responses[String(r.statusCode)] !== undefined;
  return { status: r.statusCode, code: r.statusCode >= 400 ? PROBLEM_SCHEMA.parse(r.json()).code : undefined, documented };
}

describe('a request to a route that takes no body', () => {
  it('is not refused for the Content-Type of its empty body', async () => {
    const r = await answer('DELETE', '/v1/admin/keys/nokey', '/v1/admin/keys/{keyId}', {
      ...bearer(admin),
      'content-type': 'application/x-www-form-urlencoded',
      'content-length': '0',
    });
    // An unknown key: 404, as without the header (not 415).
    expect(r).toEqual({ status: 404, code: 'TALLY_ERR_NOT_FOUND', documented: true });
  });

  it('is answered as without its body, whatever its Content-Type, size or Content-Encoding: a status its OpenAPI operation documents', async () => {
    const answers = {
      deleteKeyTextBody: await answer(
        'DELETE',
        '/v1/admin/keys/nokey',
        '/v1/admin/keys/{keyId}',
        { ...bearer(admin), 'content-type': 'text/plain' },
        'x',
      ),
      deleteStoreBigBody: await answer(
        'DELETE',
        '/v1/operator/stores/NOPE',
        '/v1/operator/stores/{store}',
        { ...bearer(OPERATOR), 'content-type': 'application/json' },
        ' '.repeat(2_000_000),
      ),
      getStoreEncoded: await answer('GET', '/v1/store', '/v1/store', { ...bearer(read), 'content-encoding': 'zstd' }),
    };
    expect(answers).toEqual({
      deleteKeyTextBody: { status: 404, code: 'TALLY_ERR_NOT_FOUND', documented: true },
      deleteStoreBigBody: { status: 404, code: 'TALLY_ERR_NOT_FOUND', documented: true },
      getStoreEncoded: { status: 200, code: undefined, documented: true },
    });
  });
});
