import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '@tally/testing';
import { demoHints } from './demo';

const urls = { collector: 'http://127.0.0.1:7401', 'query-api': 'http://127.0.0.1:7402' };
const keys = { store: 'DEMO', ingestKey: 'tly_ingest', readKey: 'tly_read' };
const npmLines = (dataDir: string) => demoHints(urls, keys, dataDir).filter((line) => line.includes('npm run'));

describe('the demo hints npm start prints', () => {
  it('run loadgen and tenants as printed on the default data directory', () => {
    expect(npmLines(path.join(REPO_ROOT, '.data'))).toEqual([
      '  npm run loadgen -- --duration 60',
      '(keys saved in the data directory, demo-keys.json; more stores and keys: npm run tenants -- --help)',
    ]);
  });

  it("name the stack's TALLY_DATA_DIR, quoted for the shell, when it is elsewhere (else the tools find no stack)", () => {
    for (const dataDir of ['/srv/tally data', "/tmp/it's", '/var/lib/tally']) {
      const [loadgen, tenants] = npmLines(dataDir);
      expect(loadgen).toMatch(/^ {2}TALLY_DATA_DIR=\S.* npm run loadgen -- --duration 60$/);
      expect(tenants).toContain(' TALLY_DATA_DIR=');
      // What the shell gives loadgen, run as printed.
      const command = loadgen!.trim().replace('npm run loadgen -- --duration 60', 'printenv TALLY_DATA_DIR');
      expect(execFileSync('sh', ['-c', command], { encoding: 'utf8' })).toBe(`${dataDir}\n`);
    }
  });
});
