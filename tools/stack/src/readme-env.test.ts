import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './config';
import { appEnvTable, docComments, stackEnvTable, withEnvSection, APP_SCHEMA_FILE } from './readme-env';

describe('README environment tables', () => {
  it('are generated from the schemas', () => {
    const table = appEnvTable();
    expect(table).toContain('| `HTTP_PORT` | all | `7401` collector, `7402` query-api, `7403` bucket-aggregator, `7404` dynamo-writer |');
    expect(table).toContain('| `MAX_EVENTS_PER_REQUEST` | collector | `1000` | Events per request before 413. |');
    expect(table).toContain('| `DYNAMODB_ENDPOINT` | all | (unset) |');
    expect(table).not.toContain('undocumented');
    expect(stackEnvTable()).toContain('| `COLLECTOR_PORT` | (unset) |');
    expect(docComments(path.join(repoRoot, APP_SCHEMA_FILE)).get('KEY_PREFIX')).toBe('Redis key prefix of the counters and the queues, so several Tally installations can share one Redis.');
  });

  it('in README.md are up to date (regenerate: npx tsx tools/stack/src/readme-env.main.ts --write)', () => {
    const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
    expect(readme).toBe(withEnvSection(readme));
  });
});
