import { createDynamoClient } from '@tally/dynamo';
import type { TenantDb } from '@tally/tenants';
import { createTestTable, REPO_ROOT, startProcess, type DynaliteHandle } from '@tally/testing';
import { useDynalite } from '@tally/testing/vitest';
import { runTenantsCli } from './cli';

/** In a test file: dynalite with a table of its own, handed to `ready` (as a TenantDb) before the file's tests. */
export function useTenantDb(ready: (db: TenantDb, dynalite: DynaliteHandle) => void): void {
  useDynalite(async (d) => {
    const db = { dynamo: createDynamoClient({ endpoint: d.endpoint, region: 'us-east-1' }), table: await createTestTable(d.endpoint) };
    ready(db, d);
    return () => db.dynamo.destroy();
  });
}

/** One command on the backends `open` gives: its exit code, and the lines it wrote on each stream, joined. */
export async function runTenants(argv: readonly string[], open: Parameters<typeof runTenantsCli>[2]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runTenantsCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l) }, open);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** `npm run tenants -- <argv>` as a process of its own, with `env`. */
export const tenantsProcess = (argv: string[], env: Record<string, string | undefined>) =>
  startProcess(process.execPath, ['--no-warnings', '--import', 'tsx', 'tools/tenants/src/main.ts', ...argv], { cwd: REPO_ROOT, env });
