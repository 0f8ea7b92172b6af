import { createDynamoClient, ensureTable } from '@tally/dynamo';

/** Creates the Tally table at `endpoint` unless it exists. True when it was created. */
export async function ensureTallyTable(endpoint: string, region: string, table: string): Promise<boolean> {
  const client = createDynamoClient({ endpoint, region });
  try {
    return (await ensureTable(client, table, { timeoutMs: 30_000 })).created;
  } finally {
    client.destroy();
  }
}
