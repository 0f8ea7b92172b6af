import type { CompiledRules } from '@tally/schema';
import {
  createTenant,
  deleteStore,
  eraseVisitor,
  getTenant,
  issueKey,
  keyIdOf,
  listKeys,
  listTenants,
  revokeKey,
  SCOPES,
  setCurrency,
  setIngestBudget,
  setTimeZone,
  TenantError,
  updateTenant,
  type ErasureDeps,
  type TenantDb,
  type TenantSettings,
} from '@tally/tenants';
import { alignColumns, runCli, UsageError, type CliIo, type CliValues } from '@tally/stack';
import { USAGE } from './usage';

export { USAGE };

/** What delete-store and erase-visitor need besides DynamoDB (Redis, the queues, the rules); opened on demand. */
export type ErasureContext = Omit<ErasureDeps, 'db'> & { rules: CompiledRules };

/** Runs one command; returns the exit code (0 ok, 1 refused or failed, 2 usage). */
export function runTenantsCli(argv: readonly string[], db: TenantDb, io: CliIo, erasure?: () => Promise<ErasureContext>): Promise<number> {
  return runCli(argv, io, USAGE, TENANTS_OPTIONS, (command, args, values) => run(command, args, values, db, io, erasure));
}

const TENANTS_OPTIONS = {
  'time-zone': { type: 'string' },
  scopes: { type: 'string' },
  label: { type: 'string' },
  currency: { type: 'string' },
  'history-months': { type: 'string' },
  json: { type: 'boolean' },
} as const;

async function run(
  command: string,
  args: string[],
  values: CliValues<typeof TENANTS_OPTIONS>,
  db: TenantDb,
  io: CliIo,
  erasure?: () => Promise<ErasureContext>,
): Promise<number> {
  const need = (n: number, what: string) => {
    if (args.length !== n) throw new UsageError(`${command} takes ${what}`);
  };

  switch (command) {
    case 'create': {
      need(1, '<store>');
      const t = await createTenant(db, args[0]!, values['time-zone'] ? { timeZone: values['time-zone'] } : {});
      io.out(`tally: created tenant ${t.store} (time zone ${t.timeZone})`);
      return 0;
    }
    case 'issue-key': {
      need(1, '<store> --scopes <scope,...>');
      if (!values.scopes) throw new UsageError(`issue-key needs --scopes (one or more of ${SCOPES.join(', ')})`);
      const scopes = values.scopes.split(',').flatMap((s) => s.trim() || []);
      const key = await issueKey(db, args[0]!, scopes, values.label ?? '');
      io.out(key);
      io.err(`tally: issued key ${keyIdOf(key)} (${scopes.join(', ')}) for store ${args[0]}; it is shown only this once: store it now`);
      return 0;
    }
    case 'revoke-key': {
      need(2, '<store> <key-id>');
      const k = await revokeKey(db, args[0]!, args[1]!);
      io.out(`tally: revoked key ${k.keyId} of store ${k.store} (${k.label || 'no label'}); it stops working within KEY_CACHE_TTL_MS`);
      return 0;
    }
    case 'set-time-zone': {
      need(2, '<store> <IANA time zone>');
      await setTimeZone(db, args[0]!, args[1]!);
      io.out(`tally: store ${args[0]} now bins days in ${args[1]} (counts already made keep their days)`);
      return 0;
    }
    case 'set-currency': {
      need(2, '<store> <ISO 4217 currency code>');
      const currency = args[1]!.toUpperCase();
      await setCurrency(db, args[0]!, currency);
      io.out(`tally: store ${args[0]} now shows revenue in ${currency} (counts are unchanged)`);
      return 0;
    }
    case 'set-ingest-budget': {
      need(2, '<store> <events per second | default>');
      const value = args[1] === 'default' ? undefined : /^\d+$/.test(args[1]!) ? Number(args[1]) : NaN;
      if (Number.isNaN(value))
        throw new UsageError(`set-ingest-budget takes a whole number of events per second or "default", not ${JSON.stringify(args[1])}`);
      await setIngestBudget(db, args[0]!, value);
      io.out(
        `tally: store ${args[0]} may send ${value === undefined ? 'the default INGEST_BUDGET_EVENTS_PER_SECOND' : `${value}`} events per second (collectors apply it within KEY_CACHE_TTL_MS)`,
      );
      return 0;
    }
    case 'list-keys': {
      need(1, '<store>');
      await tenantOrThrow(db, args[0]!);
      const keys = await listKeys(db, args[0]!);
      if (values.json) io.out(JSON.stringify(keys, null, 2));
      else {
        const status = (k: (typeof keys)[number]) => (k.revoked ? `revoked ${k.revokedAt ?? ''}`.trim() : 'active');
        const rows = keys.map((k) => [k.keyId, k.scopes.join(','), status(k), k.createdAt, k.label]);
        for (const line of alignColumns([['KEY ID', 'SCOPES', 'STATUS', 'CREATED', 'LABEL'], ...rows])) io.out(line);
        if (keys.length === 0) io.out(`(store ${args[0]} has no keys; issue one with: tenants issue-key ${args[0]} --scopes ingest)`);
      }
      return 0;
    }
    case 'show': {
      need(1, '<store>');
      const t = await tenantOrThrow(db, args[0]!);
      const lines = [`store ${t.store}`, `time zone ${t.timeZone}`, `created ${t.createdAt}`];
      if (t.ingestEventsPerSecond !== undefined) lines.push(`ingest budget ${t.ingestEventsPerSecond} events/s`);
      if (t.currency !== undefined) lines.push(`currency ${t.currency}`);
      io.out(lines.join('\n'));
      return 0;
    }
    case 'list': {
      need(0, 'no arguments');
      const stores = await listTenants(db);
      const unfinished = '(deletion unfinished: run delete-store again)';
      const line = (t: (typeof stores)[number]) => [t.store, t.timeZone, t.currency, t.deletingAt && unfinished].filter(Boolean).join('\t');
      for (const out of values.json ? [JSON.stringify(stores, null, 2)] : stores.map(line)) io.out(out);
      return 0;
    }
    case 'set': {
      need(1, '<store> [--time-zone Z] [--currency C] [--history-months N|forever]');
      const settings: TenantSettings = {};
      if (values['time-zone'] !== undefined) settings.timeZone = values['time-zone'];
      if (values.currency !== undefined) settings.currency = values.currency;
      const months = values['history-months'];
      if (months !== undefined) settings.historyMonths = months === 'forever' ? null : /^\d+$/.test(months) ? Number(months) : NaN;
      const t = await updateTenant(db, args[0]!, settings);
      io.out(
        `tally: store ${t.store}: time zone ${t.timeZone}, currency ${t.currency ?? 'unset'}, visitor history ${t.historyMonths === undefined ? 'kept for ever' : `${t.historyMonths} months`}`,
      );
      return 0;
    }
    case 'delete-store': {
      need(1, '<store>');
      if (!erasure) throw new UsageError('delete-store needs Redis (REDIS_URL)');
      const r = await deleteStore({ ...(await erasure()), db }, args[0]!);
      io.out(JSON.stringify(r, null, 2));
      io.err(`tally: deleted store ${r.store}; its late batches are dropped until ${r.tombstoneUntil}`);
      return 0;
    }
    case 'erase-visitor': {
      need(2, '<store> <visitor>');
      if (!erasure) throw new UsageError('erase-visitor needs Redis (REDIS_URL)');
      const r = await eraseVisitor({ ...(await erasure()), db }, args[0]!, args[1]!);
      io.out(JSON.stringify(r, null, 2));
      return 0;
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

async function tenantOrThrow(db: TenantDb, store: string) {
  const t = await getTenant(db, store);
  if (!t) throw new TenantError('TALLY_ERR_TENANT_NOT_FOUND', `tenant ${store} does not exist`);
  return t;
}
