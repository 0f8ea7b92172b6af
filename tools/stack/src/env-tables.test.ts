import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { appEnvSchemas, type AppName } from '@tally/config';
import type { DynamoTarget } from '@tally/dynamo';
import type { RedisTarget } from '@tally/queues';
import { REPO_ROOT as repoRoot } from '@tally/testing';
import { appEnvTable, README, stackEnvTable, withEnvSection } from './env-tables';

/** The variables of RedisTarget, read by the connection helpers an app hands its whole `config`. */
const REDIS_TARGET_VARIABLES = [
  'REDIS_URL',
  'REDIS_CLUSTER_NODES',
  'REDIS_SENTINELS',
  'REDIS_SENTINEL_MASTER',
  'REDIS_SENTINEL_PASSWORD',
] satisfies Array<keyof RedisTarget>;
/** The variables of DynamoTarget, read by `connectDynamo(config)`. */
const DYNAMO_TARGET_VARIABLES = ['DYNAMODB_ENDPOINT', 'AWS_REGION'] satisfies Array<keyof DynamoTarget>;
/** The worker apps' common start, `startWorkerApp(name, config)`: its own `config.NAME` reads count as the app's. */
const WORKER_APP = path.join(repoRoot, 'libs', 'queues', 'src', 'worker-app.ts');

/** The `config.NAME` reads in a source, and those of the helpers it hands its whole `config`. */
function readsOf(source: string, names: Set<string>): void {
  for (const m of source.matchAll(/\bconfig\.([A-Z][A-Z0-9_]+)/g)) names.add(m[1]!);
  if (/\bcreate(?:Redis|Producer)Connection\(config\b/.test(source)) for (const name of REDIS_TARGET_VARIABLES) names.add(name);
  if (/\bconnectDynamo\(config\b/.test(source)) for (const name of DYNAMO_TARGET_VARIABLES) names.add(name);
  if (/\bstartWorkerApp\([^,]+,\s*config\b/.test(source)) readsOf(readFileSync(WORKER_APP, 'utf8'), names);
}

/** The variables an app's non-test sources read. */
function variablesRead(app: AppName): string[] {
  const dir = path.join(repoRoot, 'apps', app, 'src');
  const names = new Set<string>();
  for (const file of readdirSync(dir, { recursive: true }) as string[]) {
    if (!file.endsWith('.ts') || file.endsWith('.test.ts')) continue;
    readsOf(readFileSync(path.join(dir, file), 'utf8'), names);
  }
  return [...names].sort();
}

describe('README environment tables', () => {
  it('are rendered from the schemas', () => {
    const table = appEnvTable();
    expect(table).toContain('| `HTTP_PORT` | all | `7401` collector, `7402` query-api, `7403` bucket-aggregator, `7404` dynamo-writer |');
    expect(table).toContain('| `MAX_EVENTS_PER_REQUEST` | collector | `1000` | Events per request before 413. |');
    expect(table).toContain('| `DYNAMODB_ENDPOINT` | all | (unset) |');
    expect(table).toContain('| `BUCKET_SECONDS` | bucket-aggregator | `900` |');
    expect(table).toContain('| `DEDUPE_WINDOW_SECONDS` | collector, query-api, bucket-aggregator | `86400` |');
    expect(table).toContain(
      '| `KEY_PREFIX` | all | `t` | Redis key prefix of the counters and the queues, so several Tally installations can share one Redis. |',
    );
    expect(table).toContain('| `REDIS_CLUSTER_NODES` | all | (unset) | Redis Cluster seed nodes');
    expect(table).toContain('| `QUEUE_SHARDS` | all | `1` | Shards of the `events` and `dynamo-writes` queues');
    expect(stackEnvTable()).toContain('| `COLLECTOR_PORT` | (unset) | The collector');
    expect(stackEnvTable()).toContain('| `REDIS_CLUSTER_NODES` | (unset) | Use this Redis Cluster');
  });

  it('name exactly the variables each app reads', () => {
    for (const app of Object.keys(appEnvSchemas) as AppName[]) {
      expect({ app, reads: variablesRead(app) }).toEqual({ app, reads: Object.keys(appEnvSchemas[app].shape).sort() });
    }
  });

  it('in README.md are up to date (regenerate: npx tsx tools/stack/src/env-tables.ts --write)', () => {
    const readme = readFileSync(README, 'utf8');
    expect(readme).toBe(withEnvSection(readme));
  });
});
