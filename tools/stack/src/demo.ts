import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTenant, getTenant, issueKey, type TenantDb } from '@tally/tenants';
import { REPO_ROOT } from '@tally/testing';
import { readJson } from './run-file';

const DEMO_STORE = 'DEMO';

/** The lines for a new user: the demo store's keys (made once per data directory, kept in demo-keys.json) and commands to try. */
export async function demoLines(urls: Record<'collector' | 'query-api', string>, db: TenantDb, dataDir: string): Promise<string[]> {
  const file = join(dataDir, 'demo-keys.json');
  let keys = readJson<{ store: string; ingestKey: string; readKey: string }>(file); // none yet on a first run
  try {
    if (!keys || !(await getTenant(db, keys.store))) {
      if (!(await getTenant(db, DEMO_STORE))) await createTenant(db, DEMO_STORE, { timeZone: 'UTC' });
      keys = {
        store: DEMO_STORE,
        ingestKey: await issueKey(db, DEMO_STORE, ['ingest'], 'npm start demo'),
        readKey: await issueKey(db, DEMO_STORE, ['read'], 'npm start demo'),
      };
      writeFileSync(file, JSON.stringify(keys, null, 2), { mode: 0o600 });
    }
  } catch (err) {
    return [`could not set up the demo store: ${(err as Error).message}`];
  }
  return demoHints(urls, keys, dataDir);
}

/** The npm commands find the stack by its data directory: off the default `.data` they say TALLY_DATA_DIR. */
export function demoHints(
  urls: Record<'collector' | 'query-api', string>,
  keys: { store: string; ingestKey: string; readKey: string },
  dataDir: string,
): string[] {
  const quoted = /^[\w@%+=:,./-]+$/.test(dataDir) ? dataDir : `'${dataDir.replaceAll("'", `'\\''`)}'`;
  const npm = dataDir === join(REPO_ROOT, '.data') ? 'npm' : `TALLY_DATA_DIR=${quoted} npm`;
  return [
    `Demo store ${keys.store}: ingest key ${keys.ingestKey}`,
    `                 read key   ${keys.readKey}   (sign in to the dashboard with it: ${urls['query-api']}/)`,
    'Send an event:',
    `  curl -s -X POST ${urls.collector}/v1/events -H 'Authorization: Bearer ${keys.ingestKey}' -H 'Content-Type: application/json' \\`,
    `    -d '[{"type":"view","ts":'"$(date +%s000)"',"dims":{"product":"P1","visitor":"V1"}}]'`,
    'Read today back (live, before anything is written to DynamoDB):',
    `  curl -s '${urls['query-api']}/v1/series?entity=store&metrics=ViewCount&range=today&granularity=day' -H 'Authorization: Bearer ${keys.readKey}'`,
    'Send it a minute of shop traffic (views, page views, orders) and watch the dashboard:',
    `  ${npm} run loadgen -- --duration 60`,
    `(keys saved in the data directory, demo-keys.json; more stores and keys: ${npm} run tenants -- --help)`,
  ];
}
