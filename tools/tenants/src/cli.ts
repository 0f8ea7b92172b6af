import { scheduleRetentionRestamp, type QUEUE, type TallyQueues } from '@tally/queues';
import { idSchema, loadRules, type CompiledRules } from '@tally/schema';
import { alignColumns, runCli, UsageError, type CliIo, type CliValues } from '@tally/stack';
import * as tenants from '@tally/tenants';
import { USAGE } from './usage';

/** What delete-store and erase-visitor need besides DynamoDB (Redis, the queues, the rules). */
export type ErasureContext = Omit<tenants.ErasureDeps, 'db'> & { rules: CompiledRules };

/** What a command runs on, opened once its whole command line has been checked; the functions connect on demand. */
export interface TenantsBackends {
  db: tenants.TenantDb;
  /**
   * `quiet`: the rules' warnings (loadRulesOrExit: visitor data erasure cannot reach) are not written, for delete-store,
   * which deletes every row of the store whatever the rules.
   */
  erasure?: (opts?: { quiet?: boolean }) => Promise<ErasureContext>;
  /** restamp-retention's wait and clock (tests); absent: restampRetention's defaults (RETENTION_SETTLE_MS). */
  restamp?: Pick<tenants.RestampOptions, 'settleMs' | 'sleep' | 'now'>;
  /** The rules (RULES_FILE) whose visitor rows restamp-retention restamps; absent: the built-in rules. */
  rules?: () => CompiledRules;
  /** For `set`'s restamp (absent: `set` says to run restamp-retention). */
  maintenance?: () => Promise<Pick<TallyQueues, typeof QUEUE.maintenance>>;
}

const TENANTS_OPTIONS = {
  'time-zone': { type: 'string' },
  scopes: { type: 'string' },
  label: { type: 'string' },
  currency: { type: 'string' },
  'history-months': { type: 'string' },
  json: { type: 'boolean' },
  reindex: { type: 'boolean' },
} as const;

type Values = CliValues<typeof TENANTS_OPTIONS>;

/**
 * Runs one command; returns the exit code (0 ok, 1 refused or failed, 2 usage or a bad value). Every value the CLI
 * can check is checked before `open` is called (at most once; `redis`: the command needs Redis too), so a bad command
 * line is exit 2 whatever is configured, with nothing resolved or connected.
 */
export function runTenantsCli(
  argv: readonly string[],
  io: CliIo,
  open: (need: { redis: boolean }) => TenantsBackends | Promise<TenantsBackends>,
): Promise<number> {
  return runCli(argv, io, { tool: 'tenants', usage: USAGE, options: TENANTS_OPTIONS }, async (command, args, values) => {
    // runCli runs only the commands USAGE lists, those of COMMANDS (a test checks); the `<…>` words that begin the
    // synopsis are the arguments it takes.
    const what = new RegExp(`^  ${command} ((?:<[^>]*> ?)*)`, 'm').exec(USAGE)![1]!.trim();
    const names = what.match(/<[^>]*>/g) ?? [];
    if (args.length !== names.length) throw new UsageError(`${command} takes ${what || 'no arguments'}`);
    try {
      // The ids, as the admin API checks them, before any backend is looked for.
      for (const [i, name] of names.entries()) checkId[name]?.(args[i]!);
      await COMMANDS[command]!(args, { values, io, open: async (need = { redis: false }) => open(need) });
    } catch (err) {
      // A bad value (store, visitor or key id, time zone, currency, scopes, budget, …) is bad input: exit 2 like a
      // usage error, in one line.
      if (!(err instanceof InvalidValue || (err instanceof tenants.TenantError && err.code.startsWith('TALLY_ERR_INVALID_')))) throw err;
      io.err(`tally: ${err.message}`);
      return 2;
    }
    return 0;
  });
}

type Open = (need?: { redis: boolean }) => Promise<TenantsBackends>;

/** A bad value the CLI checks itself (a visitor or key id; libs/tenants checks the others): exit 2, one line. */
class InvalidValue extends Error {}

/** The checks of the positional arguments named so in USAGE. */
const checkId: Record<string, (value: string) => void> = {
  '<store>': (store) => tenants.checkStore(store),
  '<visitor>': (visitor) => {
    if (!idSchema.safeParse(visitor).success)
      throw new InvalidValue(`visitor id ${JSON.stringify(visitor)} is invalid: 1-128 characters of A-Z a-z 0-9 _ . : -`);
  },
  // As list-keys shows it, or a longer prefix of the key's sha256 (libs/tenants revokeKey).
  '<key-id>': (keyId) => {
    if (!/^[0-9a-f]{6,64}$/.test(keyId))
      throw new InvalidValue(`key id ${JSON.stringify(keyId)} is not 6-64 lower-case hex digits (see: list-keys)`);
  },
};

/** Checks the command line's values (throws UsageError or a TALLY_ERR_INVALID_ TenantError), then opens and runs. */
type Command = (args: string[], c: { values: Values; io: CliIo; open: Open }) => Promise<void>;

export const COMMANDS: Record<string, Command> = {
  create: async ([store], { values, io, open }) => {
    const { historyMonths: months, ...settings } = settingsOf(values);
    // `forever` is what a new tenant has anyway: no retention.
    const opts = { ...settings, ...(typeof months === 'number' && { historyMonths: months }) };
    const t = await tenants.createTenant((await open()).db, store!, opts);
    const shown = [`time zone ${t.timeZone}`];
    if (t.currency !== undefined) shown.push(`currency ${t.currency}`);
    if (t.historyMonths !== undefined) shown.push(`visitor history ${historyOf(t.historyMonths)}`);
    io.out(`tally: created tenant ${t.store} (${shown.join(', ')})`);
  },
  'issue-key': async ([store], { values, io, open }) => {
    if (!values.scopes) throw new UsageError(`issue-key needs --scopes (one or more of ${tenants.SCOPES.join(', ')})`);
    const scopes = scopesOf(values.scopes);
    const label = values.label ?? '';
    tenants.checkLabel(label);
    const key = await tenants.issueKey((await open()).db, store!, scopes, label);
    io.out(key);
    io.err(`tally: issued key ${tenants.keyIdOf(key)} (${scopes.join(', ')}) for store ${store}; it is shown only this once: store it now`);
  },
  'revoke-key': async ([store, keyId], { io, open }) => {
    const k = await tenants.revokeKey((await open()).db, store!, keyId!);
    io.out(`tally: revoked key ${k.keyId} of store ${k.store} (${k.label || 'no label'}); it stops working within KEY_CACHE_TTL_MS`);
  },
  'set-time-zone': async ([store, zone], { io, open }) => {
    const timeZone = checkTimeZone(zone!);
    const t = await tenants.updateTenant((await open()).db, store!, { timeZone });
    io.out(`tally: store ${t.store} now bins days in ${t.timeZone} (counts already made keep their days)`);
  },
  'set-currency': async ([store, code], { io, open }) => {
    const currency = currencyOf(code!);
    await tenants.setCurrency((await open()).db, store!, currency);
    io.out(`tally: store ${store} now shows revenue in ${currency} (counts are unchanged)`);
  },
  'set-ingest-budget': async ([store, budget], { io, open }) => {
    const value = budget === 'default' ? undefined : /^\d+$/.test(budget!) ? Number(budget) : NaN;
    if (Number.isNaN(value))
      throw new UsageError(`set-ingest-budget takes a whole number of events per second or "default", not ${JSON.stringify(budget)}`);
    tenants.checkSettings({ ingestEventsPerSecond: value });
    await tenants.setIngestBudget((await open()).db, store!, value);
    const perSecond = value === undefined ? 'the default INGEST_BUDGET_EVENTS_PER_SECOND' : value;
    io.out(`tally: store ${store} may send ${perSecond} events per second (collectors apply it within KEY_CACHE_TTL_MS)`);
  },
  'list-keys': async ([store], { values, io, open }) => {
    const { db } = await open();
    await tenantOrThrow(db, store!);
    const keys = await tenants.listKeys(db, store!);
    if (values.json) return json(io, keys);
    const status = (k: (typeof keys)[number]) => (k.revoked ? `revoked ${k.revokedAt ?? ''}`.trim() : 'active');
    const rows = keys.map((k) => [k.keyId, k.scopes.join(','), status(k), k.createdAt, k.label]);
    for (const line of alignColumns([['KEY ID', 'SCOPES', 'STATUS', 'CREATED', 'LABEL'], ...rows])) io.out(line);
    if (keys.length === 0) io.out(`(store ${store} has no keys; issue one with: tenants issue-key ${store} --scopes ingest)`);
  },
  show: async ([store], { io, open }) => {
    const t = await tenantOrThrow((await open()).db, store!);
    const lines = [
      `store ${t.store}`,
      `time zone ${t.timeZone}`,
      `created ${t.createdAt}`,
      `ingest budget ${t.ingestEventsPerSecond === undefined ? "the collectors' default (INGEST_BUDGET_EVENTS_PER_SECOND)" : `${t.ingestEventsPerSecond} events/s`}`,
      `currency ${t.currency ?? 'unset (revenue shown as a plain number)'}`,
      `visitor history ${historyOf(t.historyMonths)}`,
    ];
    if (t.deletingAt) lines.push(unfinished(t));
    io.out(lines.join('\n'));
  },
  list: async (_args, { values, io, open }) => {
    const stores = await tenants.listTenants((await open()).db, { reindex: values.reindex === true });
    if (values.json) return json(io, stores);
    // Every row has every column, `-` for an unset one, so that a column always holds the same field.
    const rows = stores.map((t) => [t.store, t.timeZone, t.currency ?? '-', t.deletingAt ? unfinished(t) : '-']);
    for (const line of alignColumns([['STORE', 'TIME ZONE', 'CURRENCY', 'NOTE'], ...rows])) io.out(line);
    if (stores.length === 0) io.out('(no stores; create one with: tenants create <store>)');
  },
  set: async ([store], { values, io, open }) => {
    const settings = settingsOf(values);
    // A change of the visitor history schedules the restamp of the items already written, on Redis.
    const { db, maintenance } = await open({ redis: settings.historyMonths !== undefined });
    // Connected before anything is written: Redis unreachable stops the command with nothing changed.
    const queues = settings.historyMonths === undefined ? undefined : await maintenance?.();
    const schedule = queues && {
      restamp: (changedAt: number) => scheduleRetentionRestamp(queues, store!, changedAt, tenants.RETENTION_SETTLE_MS),
    };
    const { tenant: t, history } = await tenants.changeTenant(db, store!, settings, schedule);
    io.out(
      `tally: store ${t.store}: time zone ${t.timeZone}, currency ${t.currency ?? 'unset'}, visitor history ${historyOf(t.historyMonths)}`,
    );
    if (!history) return;
    const was = `visitor history was ${historyOf(history.before)}`;
    // The items already written keep the expiry of the old setting until restamped (libs/tenants retention-change.ts).
    if (schedule) {
      const at = new Date(history.changedAt + tenants.RETENTION_SETTLE_MS).toISOString();
      io.err(
        `tally: ${was}: the dynamo-writer restamps the visitor items already written with the new expiry from ${at} (restamp scheduled; by hand: tenants restamp-retention ${t.store})`,
      );
    } else
      io.err(
        `tally: ${was}: the visitor items already written keep that setting's expiry until restamped; run now: tenants restamp-retention ${t.store}`,
      );
  },
  'restamp-retention': async ([store], { io, open }) => {
    const backends = await open();
    const { db, restamp } = backends;
    // Which rows are a visitor's (every entity whose key includes the visitor), read before the wait.
    const rules = backends.rules?.() ?? loadRules();
    // Before the wait: an unknown store (or one being deleted) is refused at once.
    if ((await tenantOrThrow(db, store!)).deletingAt)
      throw new tenants.TenantError('TALLY_ERR_TENANT_NOT_FOUND', `tenant ${store} is being deleted (run delete-store again)`);
    const settleMs = restamp?.settleMs ?? tenants.RETENTION_SETTLE_MS;
    if (settleMs > 0)
      io.err(
        `tally: waiting ${Math.ceil(settleMs / 1000)} s for the writers' cached settings of store ${store} to expire, then restamping`,
      );
    const r = await tenants.restampRetention(db, store!, { ...restamp, rules });
    const notes = [];
    if (r.changedMeanwhile > 0) notes.push(`${r.changedMeanwhile} changed meanwhile (deleted, or stamped by a writer) left as they are`);
    if (r.totalsWithoutMonths > 0) notes.push(`${r.totalsWithoutMonths} row(s) with a TOTAL but no month item kept its expiry`);
    io.out(
      `tally: store ${r.store} (visitor history ${historyOf(r.historyMonths)}): scanned ${r.scanned} visitor items, restamped ${r.restamped}${notes.map((n) => `; ${n}`).join('')}`,
    );
  },
  'delete-store': async ([store], { io, open }) => {
    const r = await tenants.deleteStore(await withRedis(open, 'delete-store', { quiet: true }), store!);
    json(io, r);
    io.err(
      `tally: deleted store ${r.store}; its late batches are dropped until ${r.tombstoneUntil}; its id can be used again from ${r.reusableAt}`,
    );
  },
  'erase-visitor': async ([store, visitor], { io, open }) =>
    json(io, await tenants.eraseVisitor(await withRedis(open, 'erase-visitor'), store!, visitor!)),
};

const json = (io: CliIo, x: unknown) => io.out(JSON.stringify(x, null, 2));

/** DynamoDB, and Redis with the queues and rules, for delete-store and erase-visitor. */
async function withRedis(open: Open, command: string, opts?: { quiet?: boolean }) {
  const { db, erasure } = await open({ redis: true });
  if (!erasure) throw new UsageError(`${command} needs Redis (REDIS_URL)`);
  return { ...(await erasure(opts)), db };
}

async function tenantOrThrow(db: tenants.TenantDb, store: string) {
  tenants.checkStore(store);
  const t = await tenants.getTenant(db, store);
  if (!t) throw new tenants.TenantError('TALLY_ERR_TENANT_NOT_FOUND', `tenant ${store} does not exist`);
  return t;
}

const unfinished = (t: tenants.TenantInfo) => `deletion unfinished since ${t.deletingAt}: run delete-store again`;

const historyOf = (months: number | null | undefined) => (months == null ? 'kept for ever' : `${months} months`);

/** --time-zone, --currency and --history-months of create and set, each checked (an empty value is refused, not "unset"). */
function settingsOf(values: Values): { timeZone?: string; currency?: string; historyMonths?: number | null } {
  const zone = values['time-zone'];
  const months = values['history-months'];
  return {
    ...(zone !== undefined && { timeZone: checkTimeZone(zone) }),
    ...(values.currency !== undefined && { currency: currencyOf(values.currency) }),
    ...(months !== undefined && { historyMonths: historyMonths(months) }),
  };
}

// Time zones, currencies and scopes are checked by libs/tenants' own checks (it runs them again before it writes), so
// that a bad one is refused before any backend is resolved, in the library's words: TALLY_ERR_INVALID_<what>, exit 2.

const checkTimeZone = (zone: string) => (tenants.checkTimeZone(zone), zone);

/** An ISO 4217 code, in any case (`eur` is EUR). */
const currencyOf = (code: string) => (tenants.checkCurrency(code.toUpperCase()), code.toUpperCase());

/** --scopes: a comma-separated list. */
const scopesOf = (value: string) => tenants.checkScopes(value.split(',').flatMap((s) => s.trim() || []));

/** --history-months: months in range, or `forever` (null: no retention); refused in the CLI's words, not the API's. */
function historyMonths(value: string): number | null {
  if (value === 'forever') return null;
  const [months, max] = [/^\d+$/.test(value) ? Number(value) : NaN, tenants.MAX_HISTORY_MONTHS];
  if (!(months >= 1 && months <= max))
    throw new tenants.TenantError(
      'TALLY_ERR_INVALID_RETENTION',
      `--history-months takes a whole number of months from 1 to ${max}, or "forever"; got ${JSON.stringify(value)}`,
    );
  return months;
}
