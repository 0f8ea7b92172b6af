import type { CompiledRules } from '@tally/schema';
import { alignColumns, runCli, UsageError, type CliIo, type CliValues } from '@tally/stack';
import * as tenants from '@tally/tenants';
import { USAGE } from './usage';

export { USAGE };

/** What delete-store and erase-visitor need besides DynamoDB (Redis, the queues, the rules); opened on demand. */
export type ErasureContext = Omit<tenants.ErasureDeps, 'db'> & { rules: CompiledRules };

const TENANTS_OPTIONS = {
  'time-zone': { type: 'string' },
  scopes: { type: 'string' },
  label: { type: 'string' },
  currency: { type: 'string' },
  'history-months': { type: 'string' },
  json: { type: 'boolean' },
  reindex: { type: 'boolean' },
} as const;

/** Runs one command; returns the exit code (0 ok, 1 refused or failed, 2 usage or a bad value). */
export function runTenantsCli(argv: readonly string[], db: tenants.TenantDb, io: CliIo, erasure?: () => Promise<ErasureContext>) {
  return runCli(argv, io, USAGE, TENANTS_OPTIONS, async (command, args, values) => {
    const all = commands(db, io, values, erasure);
    const cmd = Object.hasOwn(all, command) ? all[command] : undefined;
    if (!cmd) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    const [arity, what, run] = cmd;
    if (args.length !== arity) throw new UsageError(`${command} takes ${what}`);
    try {
      await run(args[0]!, args[1]!);
    } catch (err) {
      // A bad value (time zone, currency, scopes, budget, …) is bad input: exit 2 like a usage error, in one line.
      if (!(err instanceof tenants.TenantError && err.code.startsWith('TALLY_ERR_INVALID_'))) throw err;
      io.err(`tally: ${err.message}`);
      return 2;
    }
    return 0;
  });
}

type Command = [arity: number, what: string, run: (store: string, arg: string) => Promise<void>];

/** Each command: its number of positional arguments, how the usage error names them, and what it does. */
function commands(
  db: tenants.TenantDb,
  io: CliIo,
  values: CliValues<typeof TENANTS_OPTIONS>,
  erasure?: () => Promise<ErasureContext>,
): Record<string, Command> {
  const withRedis = async (command: string) => {
    if (!erasure) throw new UsageError(`${command} needs Redis (REDIS_URL)`);
    return { ...(await erasure()), db };
  };
  const tenantOrThrow = async (store: string) => {
    const t = await tenants.getTenant(db, store);
    if (!t) throw new tenants.TenantError('TALLY_ERR_TENANT_NOT_FOUND', `tenant ${store} does not exist`);
    return t;
  };
  const json = (x: unknown) => io.out(JSON.stringify(x, null, 2));
  return {
    create: c(1, '<store>', async (store) => {
      const t = await tenants.createTenant(db, store, values['time-zone'] ? { timeZone: values['time-zone'] } : {});
      io.out(`tally: created tenant ${t.store} (time zone ${t.timeZone})`);
    }),
    'issue-key': c(1, '<store> --scopes <scope,...>', async (store) => {
      if (!values.scopes) throw new UsageError(`issue-key needs --scopes (one or more of ${tenants.SCOPES.join(', ')})`);
      const scopes = values.scopes.split(',').flatMap((s) => s.trim() || []);
      const key = await tenants.issueKey(db, store, scopes, values.label ?? '');
      io.out(key);
      io.err(
        `tally: issued key ${tenants.keyIdOf(key)} (${scopes.join(', ')}) for store ${store}; it is shown only this once: store it now`,
      );
    }),
    'revoke-key': c(2, '<store> <key-id>', async (store, keyId) => {
      const k = await tenants.revokeKey(db, store, keyId);
      io.out(`tally: revoked key ${k.keyId} of store ${k.store} (${k.label || 'no label'}); it stops working within KEY_CACHE_TTL_MS`);
    }),
    'set-time-zone': c(2, '<store> <IANA time zone>', async (store, zone) => {
      await tenants.setTimeZone(db, store, zone);
      io.out(`tally: store ${store} now bins days in ${zone} (counts already made keep their days)`);
    }),
    'set-currency': c(2, '<store> <ISO 4217 currency code>', async (store, code) => {
      await tenants.setCurrency(db, store, code.toUpperCase());
      io.out(`tally: store ${store} now shows revenue in ${code.toUpperCase()} (counts are unchanged)`);
    }),
    'set-ingest-budget': c(2, '<store> <events per second | default>', async (store, budget) => {
      const value = budget === 'default' ? undefined : /^\d+$/.test(budget) ? Number(budget) : NaN;
      if (Number.isNaN(value))
        throw new UsageError(`set-ingest-budget takes a whole number of events per second or "default", not ${JSON.stringify(budget)}`);
      await tenants.setIngestBudget(db, store, value);
      const perSecond = value === undefined ? 'the default INGEST_BUDGET_EVENTS_PER_SECOND' : value;
      io.out(`tally: store ${store} may send ${perSecond} events per second (collectors apply it within KEY_CACHE_TTL_MS)`);
    }),
    'list-keys': c(1, '<store>', async (store) => {
      await tenantOrThrow(store);
      const keys = await tenants.listKeys(db, store);
      if (values.json) return json(keys);
      const status = (k: (typeof keys)[number]) => (k.revoked ? `revoked ${k.revokedAt ?? ''}`.trim() : 'active');
      const rows = keys.map((k) => [k.keyId, k.scopes.join(','), status(k), k.createdAt, k.label]);
      for (const line of alignColumns([['KEY ID', 'SCOPES', 'STATUS', 'CREATED', 'LABEL'], ...rows])) io.out(line);
      if (keys.length === 0) io.out(`(store ${store} has no keys; issue one with: tenants issue-key ${store} --scopes ingest)`);
    }),
    show: c(1, '<store>', async (store) => {
      const t = await tenantOrThrow(store);
      const lines = [
        `store ${t.store}`,
        `time zone ${t.timeZone}`,
        `created ${t.createdAt}`,
        `ingest budget ${t.ingestEventsPerSecond === undefined ? "the collectors' default (INGEST_BUDGET_EVENTS_PER_SECOND)" : `${t.ingestEventsPerSecond} events/s`}`,
        `currency ${t.currency ?? 'unset (revenue shown as a plain number)'}`,
        `visitor history ${historyOf(t)}`,
      ];
      if (t.deletingAt) lines.push(`deletion unfinished since ${t.deletingAt}: run delete-store again`);
      io.out(lines.join('\n'));
    }),
    list: c(0, 'no arguments', async () => {
      const stores = await tenants.listTenants(db, { reindex: values.reindex === true });
      if (values.json) return json(stores);
      const unfinished = '(deletion unfinished: run delete-store again)';
      for (const t of stores) io.out([t.store, t.timeZone, t.currency, t.deletingAt && unfinished].filter(Boolean).join('\t'));
    }),
    set: c(1, '<store> [--time-zone Z] [--currency C] [--history-months N|forever]', async (store) => {
      const months = values['history-months'];
      const t = await tenants.updateTenant(db, store, {
        ...(values['time-zone'] !== undefined && { timeZone: values['time-zone'] }),
        ...(values.currency !== undefined && { currency: values.currency }),
        ...(months !== undefined && { historyMonths: historyMonths(months) }),
      });
      io.out(`tally: store ${t.store}: time zone ${t.timeZone}, currency ${t.currency ?? 'unset'}, visitor history ${historyOf(t)}`);
    }),
    'delete-store': c(1, '<store>', async (store) => {
      const r = await tenants.deleteStore(await withRedis('delete-store'), store);
      json(r);
      io.err(`tally: deleted store ${r.store}; its late batches are dropped until ${r.tombstoneUntil}`);
    }),
    'erase-visitor': c(2, '<store> <visitor>', async (store, visitor) =>
      json(await tenants.eraseVisitor(await withRedis('erase-visitor'), store, visitor)),
    ),
  };
}

const c = (arity: number, what: string, run: Command[2]): Command => [arity, what, run];

const historyOf = (t: tenants.TenantInfo) => (t.historyMonths === undefined ? 'kept for ever' : `${t.historyMonths} months`);

/** --history-months: a whole number of months in range, or `forever` (null: the retention is removed). */
function historyMonths(value: string): number | null {
  if (value === 'forever') return null;
  const months = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(months >= 1 && months <= tenants.MAX_HISTORY_MONTHS))
    throw new tenants.TenantError(
      'TALLY_ERR_INVALID_RETENTION',
      `--history-months takes a whole number of months from 1 to ${tenants.MAX_HISTORY_MONTHS}, or "forever"; got ${JSON.stringify(value)}`,
    );
  return months;
}
