import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createDynamoClient } from '@tally/dynamo';
import { createTenant, getTenant, issueKey } from '@tally/tenants';

/** What the running stack looks like, for hooks that act on it once it is up. */
export interface StackContext {
  /** Base URL of each app by name, e.g. `collector` → `http://127.0.0.1:7401`. */
  urls: Record<'collector' | 'query-api' | 'bucket-aggregator' | 'dynamo-writer', string>;
  redisUrl: string;
  dynamoEndpoint: string;
  table: string;
  region: string;
  dataDir: string;
  /** Prints a line as is (no log prefix), so commands can be copied. */
  log(message: string): void;
}

const DEMO_STORE = 'DEMO';

interface DemoKeys {
  store: string;
  ingestKey: string;
  readKey: string;
}

/** The commands printed for a new user: send an event, read it back, open the dashboard. */
function demoInstructions(urls: StackContext['urls'], keys: DemoKeys): string[] {
  return [
    `Demo store ${keys.store}: ingest key ${keys.ingestKey}`,
    `                 read key   ${keys.readKey}   (sign in to the dashboard with it: ${urls['query-api']}/)`,
    'Send an event:',
    `  curl -s -X POST ${urls.collector}/v1/events -H 'Authorization: Bearer ${keys.ingestKey}' -H 'Content-Type: application/json' \\`,
    `    -d '[{"type":"view","ts":'"$(date +%s000)"',"dims":{"product":"P1","visitor":"V1"}}]'`,
    'Read today back (live, before anything is written to DynamoDB):',
    `  curl -s '${urls['query-api']}/v1/series?entity=store&metrics=ViewCount&range=today&granularity=day' -H 'Authorization: Bearer ${keys.readKey}'`,
    `(keys saved in the data directory, demo-keys.json; more stores and keys: npm run tenants -- --help)`,
  ];
}

/**
 * Runs once, after every app answered /healthz: on the first run with this data directory, creates the demo
 * store with an ingest and a read key (kept in <dataDir>/demo-keys.json, mode 600), then prints the keys and
 * ready-to-paste curl commands.
 */
export async function afterStart(ctx: StackContext): Promise<void> {
  const file = join(ctx.dataDir, 'demo-keys.json');
  let keys: DemoKeys | undefined;
  if (existsSync(file)) {
    try {
      keys = JSON.parse(readFileSync(file, 'utf8')) as DemoKeys;
    } catch {
      keys = undefined;
    }
  }
  const client = createDynamoClient({ endpoint: ctx.dynamoEndpoint, region: ctx.region });
  const db = { dynamo: client, table: ctx.table };
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
    for (const line of demoInstructions(ctx.urls, keys)) ctx.log(line);
  } catch (err) {
    ctx.log(`could not set up the demo store: ${(err as Error).message}`);
  } finally {
    client.destroy();
  }
}
