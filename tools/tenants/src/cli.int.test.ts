import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTenantDirectory, SCOPES, type TenantDb } from '@tally/tenants';
import { freePort, type DynaliteHandle } from '@tally/testing';
import { describe, expect, it } from 'vitest';
import { COMMANDS, runTenantsCli, type ErasureContext, type TenantsBackends } from './cli';
import { USAGE } from './usage';
import { runTenants, tenantsProcess, useTenantDb } from './test-fixtures';

let dynalite: DynaliteHandle;
let db: TenantDb;
useTenantDb((tdb, d) => ([db, dynalite] = [tdb, d]));

/** How many times a command opened its backends (only ever after its command line was checked), and what it asked for. */
const opened: Array<{ redis: boolean }> = [];

/** One command on `backends` (default: the test table, no Redis). */
const cliOn = (backends: Omit<TenantsBackends, 'db'>, argv: string[]) =>
  runTenants(argv, (need) => (opened.push(need), { db, ...backends }));
const cli = (...argv: string[]) => cliOn({}, argv);

const SEE_HELP = 'see: npm run tenants -- --help';

describe('tenants CLI', () => {
  it('creates a tenant, issues a key printed once, lists keys without them, sets the time zone, revokes', async () => {
    expect(await cli('create', 'SHOP1', '--time-zone', 'Europe/Paris')).toEqual({
      code: 0,
      out: 'tally: created tenant SHOP1 (time zone Europe/Paris)',
      err: '',
    });
    const issued = await cli('issue-key', 'SHOP1', '--scopes', 'ingest,read', '--label', 'web shop');
    expect(issued.code).toBe(0);
    const key = issued.out;
    expect(key).toMatch(/^tly_[A-Za-z0-9_-]{43}$/);
    const keyId = /issued key ([0-9a-f]{12}) \(ingest, read\) for store SHOP1; it is shown only this once/.exec(issued.err)?.[1];
    expect(keyId).toBeDefined();

    const dir = createTenantDirectory({ dynamo: db.dynamo, table: db.table, cacheTtlMs: 0 });
    expect(await dir.authenticate(key)).toEqual({ store: 'SHOP1', scopes: ['ingest', 'read'], timeZone: 'Europe/Paris' });

    const list = await cli('list-keys', 'SHOP1');
    expect(list.code).toBe(0);
    expect(list.out.split('\n')[0]).toMatch(/^KEY ID\s+SCOPES\s+STATUS\s+CREATED\s+LABEL$/);
    expect(list.out.split('\n')[1]).toMatch(new RegExp(`^${keyId}\\s+ingest,read\\s+active\\s+\\S+Z\\s+web shop$`));
    expect(list.out).not.toContain(key.slice(4));

    expect((await cli('set-time-zone', 'SHOP1', 'Asia/Tokyo')).code).toBe(0);
    expect((await cli('show', 'SHOP1')).out).toMatch(
      /^store SHOP1\ntime zone Asia\/Tokyo\ncreated \S+\ningest budget the collectors' default \(INGEST_BUDGET_EVENTS_PER_SECOND\)\ncurrency unset \(revenue shown as a plain number\)\nvisitor history kept for ever$/,
    );
    expect((await cli('set-ingest-budget', 'SHOP1', '2500')).code).toBe(0);
    expect((await cli('show', 'SHOP1')).out).toMatch(/\ningest budget 2500 events\/s\n/);
    expect(await dir.authenticate(key)).toMatchObject({ store: 'SHOP1', ingestEventsPerSecond: 2500 });
    expect((await cli('set-ingest-budget', 'SHOP1', 'default')).code).toBe(0);
    expect((await cli('show', 'SHOP1')).out).toMatch(/\ningest budget the collectors' default /);
    expect((await cli('set-ingest-budget', 'SHOP1', 'lots')).code).toBe(2);
    expect(await cli('set-ingest-budget', 'SHOP1', '0')).toMatchObject({
      code: 2,
      err: expect.stringMatching(/^tally: ingest budget 0 is not a whole number[^\n]*$/),
    });
    expect(await cli('issue-key', 'SHOP1', '--scopes', 'write')).toMatchObject({ code: 2, out: '' });
    expect(await cli('set-currency', 'SHOP1', 'eur')).toEqual({
      code: 0,
      out: 'tally: store SHOP1 now shows revenue in EUR (counts are unchanged)',
      err: '',
    });
    expect((await cli('show', 'SHOP1')).out).toMatch(/\ncurrency EUR\nvisitor history kept for ever$/);
    expect(await dir.authenticate(key)).toEqual({ store: 'SHOP1', scopes: ['ingest', 'read'], timeZone: 'Asia/Tokyo', currency: 'EUR' });

    expect((await cli('revoke-key', 'SHOP1', keyId!)).out).toMatch(
      new RegExp(`^tally: revoked key ${keyId} of store SHOP1 \\(web shop\\)`),
    );
    expect(await dir.authenticate(key)).toBeUndefined();
    const json = JSON.parse((await cli('list-keys', 'SHOP1', '--json')).out);
    expect(json).toEqual([expect.objectContaining({ keyId, revoked: true, scopes: ['ingest', 'read'], label: 'web shop' })]);
  });

  it('refuses with one line and exit 1 or 2', async () => {
    expect(await cli('create', 'SHOP2', '--time-zone', 'Mars/Base')).toEqual({
      code: 2,
      out: '',
      err: 'tally: time zone "Mars/Base" is not an IANA time zone name such as Europe/Paris or UTC',
    });
    expect((await cli('issue-key', 'NOPE', '--scopes', 'ingest')).err).toBe('tally: tenant NOPE does not exist (create it first)');
    for (const bad of ['XYZ', 'EURO', '€', '']) {
      expect(await cli('set-currency', 'SHOP1', bad)).toEqual({
        code: 2,
        out: '',
        err: `tally: currency ${JSON.stringify(bad)} is not an ISO 4217 code such as EUR, USD or JPY`,
      });
    }
    expect((await cli('set-currency', 'NOPE', 'USD')).err).toBe('tally: tenant NOPE does not exist (create it first)');
    expect((await cli('set-currency', 'SHOP1')).code).toBe(2);
    expect((await cli('list-keys', 'NOPE')).code).toBe(1);
    const usage = await cli('issue-key', 'SHOP1');
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/^tally: issue-key needs --scopes/);
    expect((await cli('frobnicate')).code).toBe(2);
    expect((await cli('--nope')).code).toBe(2);
    expect((await cli()).out).toMatch(/^usage: tenants <command>/);
  });

  it('lists stores and changes settings with the same library functions as the admin API', async () => {
    expect((await cli('set', 'SHOP1', '--currency', 'EUR', '--history-months', '13')).out).toBe(
      'tally: store SHOP1: time zone Asia/Tokyo, currency EUR, visitor history 13 months',
    );
    expect((await cli('show', 'SHOP1')).out).toMatch(/\ncurrency EUR\nvisitor history 13 months$/);
    expect((await cli('set', 'SHOP1', '--history-months', 'forever')).out).toMatch(/visitor history kept for ever$/);
    // A bad value is one line in the CLI's own words (not the API's `historyMonths`/`null`), exit 2, nothing changed.
    for (const bad of ['ten', '0', '13.5', '1201'])
      expect(await cli('set', 'SHOP1', '--history-months', bad)).toEqual({
        code: 2,
        out: '',
        err: `tally: --history-months takes a whole number of months from 1 to 1200, or "forever"; got "${bad}"`,
      });
    expect((await cli('show', 'SHOP1')).out).toMatch(/\nvisitor history kept for ever$/);
    expect((await cli('set', 'NOPE', '--currency', 'EUR')).code).toBe(1);

    // A deletion cut short leaves `deletingAt` on the tenant (libs/tenants erasure.ts): show says what to do.
    expect((await cli('create', 'HALF')).code).toBe(0);
    await db.dynamo.send(
      new UpdateItemCommand({
        TableName: db.table,
        Key: { pk: { S: '_tenant#HALF' }, sk: { S: 'META' } },
        UpdateExpression: 'SET deletingAt = :at',
        ExpressionAttributeValues: { ':at': { S: '2026-01-02T03:04:05.000Z' } },
      }),
    );
    expect((await cli('show', 'HALF')).out).toMatch(/\ndeletion unfinished since 2026-01-02T03:04:05.000Z: run delete-store again$/);
    // Every column holds the same field on every row, `-` where it is unset (HALF has no currency): no note lands
    // in the currency column.
    const table = [
      'STORE  TIME ZONE   CURRENCY  NOTE',
      'HALF   UTC         -         deletion unfinished since 2026-01-02T03:04:05.000Z: run delete-store again',
      'SHOP1  Asia/Tokyo  EUR       -',
    ];
    expect((await cli('list')).out.split('\n')).toEqual(table);
    expect((await cli('list', '--reindex')).out.split('\n')).toEqual(table);
    expect(JSON.parse((await cli('list', '--json')).out)).toEqual([
      expect.objectContaining({ store: 'HALF', timeZone: 'UTC', deletingAt: '2026-01-02T03:04:05.000Z' }),
      expect.objectContaining({ store: 'SHOP1', timeZone: 'Asia/Tokyo', currency: 'EUR' }),
    ]);
    expect((await cli('delete-store', 'SHOP1')).err).toMatch(/^tally: delete-store needs Redis/);
  });

  it('creates a tenant with its currency and visitor history, checked like set checks them; an empty time zone is refused', async () => {
    expect(await cli('create', 'NEW1', '--currency', 'eur', '--history-months', '12')).toEqual({
      code: 0,
      out: 'tally: created tenant NEW1 (time zone UTC, currency EUR, visitor history 12 months)',
      err: '',
    });
    expect((await cli('show', 'NEW1')).out).toMatch(/\ntime zone UTC\n[^]*\ncurrency EUR\nvisitor history 12 months$/);
    expect((await cli('create', 'NEW2', '--time-zone', 'Asia/Tokyo', '--history-months', 'forever')).out).toBe(
      'tally: created tenant NEW2 (time zone Asia/Tokyo)',
    );
    expect((await cli('show', 'NEW2')).out).toMatch(/\ncurrency unset [^\n]*\nvisitor history kept for ever$/);
    // A bad value: one line, exit 2, checked before any backend is opened, and no tenant left behind.
    const bad: Array<[string[], string]> = [
      [['--time-zone', ''], 'time zone "" is not an IANA time zone name such as Europe/Paris or UTC'],
      [['--currency', 'XYZ'], 'currency "XYZ" is not an ISO 4217 code such as EUR, USD or JPY'],
      [['--currency', ''], 'currency "" is not an ISO 4217 code such as EUR, USD or JPY'],
      [['--history-months', '0'], '--history-months takes a whole number of months from 1 to 1200, or "forever"; got "0"'],
    ];
    for (const [options, message] of bad) {
      const before = opened.length;
      expect(await cli('create', 'NEW3', ...options)).toEqual({ code: 2, out: '', err: `tally: ${message}` });
      expect(opened.length).toBe(before);
    }
    expect((await cli('show', 'NEW3')).code).toBe(1);
    // set refuses an empty time zone too (it used to be the only command that did).
    expect(await cli('set', 'NEW1', '--time-zone', '')).toMatchObject({
      code: 2,
      err: expect.stringMatching(/^tally: time zone "" is not/),
    });
    expect((await cli('set', 'NEW1', '--currency', 'usd')).out).toMatch(/currency USD,/);
  });

  it('refuses, exit 2, naming it, an option the command does not take (never ignored), before opening anything', async () => {
    const cases: Array<[string[], string]> = [
      [['create', 'NEW4', '--scopes', 'ingest'], 'create takes no --scopes'],
      [['create', 'NEW4', '--json'], 'create takes no --json'],
      [['set-currency', 'NEW1', 'JPY', '--history-months', '3'], 'set-currency takes no --history-months'],
      [['set-time-zone', 'NEW1', 'UTC', '--currency', 'JPY'], 'set-time-zone takes no --currency'],
      [['set', 'NEW1', '--label', 'x'], 'set takes no --label'],
      [['show', 'NEW1', '--json'], 'show takes no --json'],
      [['list', '--time-zone', 'UTC'], 'list takes no --time-zone'],
      [['list-keys', 'NEW1', '--reindex'], 'list-keys takes no --reindex'],
      [['issue-key', 'NEW1', '--scopes', 'read', '--currency', 'EUR'], 'issue-key takes no --currency'],
      [['revoke-key', 'NEW1', 'abcdef', '--label', 'x'], 'revoke-key takes no --label'],
      [['set-ingest-budget', 'NEW1', '5', '--json'], 'set-ingest-budget takes no --json'],
      [['delete-store', 'NEW1', '--json'], 'delete-store takes no --json'],
      [['erase-visitor', 'NEW1', 'V1', '--reindex'], 'erase-visitor takes no --reindex'],
    ];
    const before = opened.length;
    for (const [argv, message] of cases) {
      const r = await cli(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.out).toBe('');
      // The reason, then the command's synopsis and where the help is (not the whole help).
      expect(r.err.split('\n'), argv.join(' ')).toEqual([
        `tally: ${message}`,
        expect.stringMatching(new RegExp(`^usage: tenants ${argv[0]} `)),
        SEE_HELP,
      ]);
    }
    // Bad commands, arities, options and values are refused before anything is opened too.
    for (const argv of [
      ['crate', 'NEW4'],
      ['create'],
      ['create', 'A', 'B'],
      ['list', '--bogus'],
      ['issue-key', 'NEW1'],
      ['issue-key', 'NEW1', '--scopes', 'write'],
      ['set-time-zone', 'NEW1', 'Mars/Base'],
      ['set-ingest-budget', 'NEW1', 'lots'],
      ['set', 'NEW1', '--history-months', 'ten'],
    ])
      expect((await cli(...argv)).code, argv.join(' ')).toBe(2);
    expect(opened.length).toBe(before);
    expect((await cli('issue-key', 'NEW1', '--scopes', 'read,write')).err).toBe(
      'tally: scopes must be one or more of ingest, read, admin; got "write"',
    );
    expect((await cli('show', 'NEW1')).out).toMatch(/\ncurrency USD\nvisitor history 12 months$/);
    expect(await cli('list-keys', 'NEW1', '--json')).toMatchObject({ code: 0, out: '[]' });
    expect((await cli('show', 'NEW4')).code).toBe(1);
  });

  it('delete-store finishes a deletion and then says the store does not exist (exit 1), as its usage says', async () => {
    const tombstones: string[] = [];
    const erasure = async () =>
      ({
        rules: {},
        eraser: {
          markStoreDeleted: async (store: string) => void tombstones.push(store),
          deleteStoreKeys: async () => 0,
          unwritten: async () => ({ epoch: undefined, outboxDays: new Map() }),
          publishedDedupeWindow: async () => undefined,
        },
        queues: [],
        tombstoneSeconds: 60,
      }) as unknown as ErasureContext;
    expect((await cli('create', 'GONE1')).code).toBe(0);
    const done = await cliOn({ erasure }, ['delete-store', 'GONE1']);
    expect(opened.at(-1)).toEqual({ redis: true });
    expect(done).toMatchObject({
      code: 0,
      err: expect.stringMatching(
        /^tally: deleted store GONE1; its late batches are dropped until \S+Z; its id can be used again from \S+Z$/,
      ),
    });
    expect(JSON.parse(done.out)).toMatchObject({ store: 'GONE1', removed: { apiKeys: 0, dynamoItems: 0 } });
    expect(tombstones).toEqual(['GONE1', 'GONE1']);
    expect(await cliOn({ erasure }, ['delete-store', 'GONE1'])).toEqual({
      code: 1,
      out: '',
      err: expect.stringMatching(
        /^tally: store GONE1 was deleted at \S+Z \(that deletion finished; nothing is left to delete\): its id can be used again from \S+Z$/,
      ),
    });
    // Until then the id is refused: the deleted store's tombstone would drop every batch of a new store.
    expect(await cli('create', 'GONE1')).toMatchObject({
      code: 1,
      err: expect.stringMatching(/^tally: store GONE1 was deleted at \S+Z: its id can be used again from \S+Z/),
    });
    expect(USAGE.replace(/\s+/g, ' ')).toContain(
      'delete-store <store> delete the store and all its data; prints from when its id can be used again; if cut short, run it again to finish it; once finished it says when it was deleted, exit 1',
    );
  });

  it('says why a command line is refused in a few lines: the reason, the synopsis of the command, where the help is', async () => {
    expect(await cli('issue-key', 'SHOP1')).toEqual({
      code: 2,
      out: '',
      err: [
        'tally: issue-key needs --scopes (one or more of ingest, read, admin)',
        'usage: tenants issue-key <store> --scopes <s,...> [--label <t>]',
        SEE_HELP,
      ].join('\n'),
    });
    expect((await cli('show', 'SHOP1', '--json')).err).toBe(
      ['tally: show takes no --json', 'usage: tenants show <store>', SEE_HELP].join('\n'),
    );
    expect((await cli('frobnicate')).err).toBe(['tally: unknown command "frobnicate"', SEE_HELP].join('\n'));
    expect((await cli('create')).err).toBe(
      [
        'tally: create takes <store>',
        'usage: tenants create <store> [--time-zone Z] [--currency C] [--history-months N|forever]',
        SEE_HELP,
      ].join('\n'),
    );
    // parseArgs' own refusals too, with the synopsis of the command they were given to.
    const bogus = (await cli('list', '--bogus')).err.split('\n');
    expect(bogus[0]).toMatch(/^tally: Unknown option '--bogus'/);
    expect(bogus.slice(1)).toEqual(['usage: tenants list [--json] [--reindex]', SEE_HELP]);
    for (const argv of [
      ['--nope'],
      ['issue-key'],
      ['issue-key', 'SHOP1', '--scopes'],
      ['set', 'SHOP1', 'x'],
      ['set-ingest-budget', 'SHOP1', 'lots'],
      ['revoke-key', 'SHOP1'],
      ['erase-visitor', 'SHOP1', 'V1', '--json'],
      ['--', '--label'],
    ]) {
      const r = await cli(...argv);
      expect([r.code, r.out], argv.join(' ')).toEqual([2, '']);
      const lines = r.err.split('\n');
      expect(lines.length, argv.join(' ')).toBeLessThan(6);
      expect(lines[0], argv.join(' ')).toMatch(/^tally: /);
      expect(lines.at(-1), argv.join(' ')).toBe(SEE_HELP);
    }
    // A bad value stays one line; --help is still the whole help, exit 0.
    expect((await cli('issue-key', 'SHOP1', '--scopes', 'write')).err.split('\n')).toHaveLength(1);
    for (const argv of [['--help'], ['help'], ['show', '-h']]) expect(await cli(...argv)).toEqual({ code: 0, out: USAGE, err: '' });
  });

  it('shows each command with exactly the options it takes, in 100 columns', async () => {
    const settings = ['time-zone', 'currency', 'history-months'];
    const TAKES: Record<string, string[]> = {
      create: settings,
      'issue-key': ['scopes', 'label'],
      'revoke-key': [],
      'set-time-zone': [],
      'set-currency': [],
      'set-ingest-budget': [],
      'list-keys': ['json'],
      show: [],
      list: ['json', 'reindex'],
      set: settings,
      'restamp-retention': [],
      'delete-store': [],
      'erase-visitor': [],
    };
    const values: Record<string, string[]> = {
      'time-zone': ['--time-zone', 'UTC'],
      scopes: ['--scopes', 'read'],
      label: ['--label', 'x'],
      currency: ['--currency', 'EUR'],
      'history-months': ['--history-months', '3'],
      json: ['--json'],
      reindex: ['--reindex'],
    };
    const commands = [...USAGE.matchAll(/^ {2}([a-z-]+) (.*?)(?: {2,}|$)/gm)];
    expect(commands.map(([, command]) => command)).toEqual(
      expect.arrayContaining(['create', 'issue-key', 'set', 'list', 'list-keys', 'show', 'delete-store', 'erase-visitor']),
    );
    for (const [, command, synopsis] of commands) {
      const taken: string[] = [];
      for (const [option, args] of Object.entries(values)) {
        const err: string[] = [];
        const notOpened = () => Promise.reject(new Error('not opening'));
        await runTenantsCli([command!, ...args], { out: () => undefined, err: (l) => err.push(l) }, notOpened);
        if (err[0] !== `tally: ${command} takes no --${option}`) taken.push(option);
      }
      expect([...synopsis!.matchAll(/--([a-z0-9][a-z0-9-]*)/gi)].map(([, o]) => o).sort(), command).toEqual(taken.sort());
      // The CLI derives what a command takes from its usage text; this pins it.
      expect(taken.sort(), command).toEqual([...(TAKES[command!] ?? [])].sort());
    }
    expect(commands.map(([, command]) => command).sort()).toEqual(Object.keys(TAKES).sort());
    expect(USAGE.split('\n').filter((line) => line.length > 100)).toEqual([]);
  });

  it('has a synopsis for every command the CLI runs, and none for another: runCli refuses a command without one as unknown', () => {
    const listed = new Set([...USAGE.matchAll(/^ {2}([a-z][\w-]*) /gm)].map(([, command]) => command));
    expect([...listed].sort()).toEqual(Object.keys(COMMANDS).sort());
  });

  it("says restamp-retention reads RULES_FILE, to be run with the dynamo-writers' (as README's upgrade note does)", () => {
    // Regression (4b37ec6): the help named RULES_FILE only for the commands on Redis, and the upgrade note not at all;
    // with the built-in rules restamp-retention skips the items of entities only a custom rules file has.
    const configured = USAGE.slice(USAGE.indexOf('Configured by')).replace(/\s+/g, ' ');
    expect(configured).toContain(
      "(restamp-retention also RULES_FILE, which picks the visitor rows: run it with the dynamo-writers' one, else the items of entities only theirs has are skipped;",
    );
    const readme = readFileSync(join(__dirname, '../../../README.md'), 'utf8').replace(/\s+/g, ' ');
    const note = readme.slice(readme.indexOf('After upgrading from an earlier version, run that once'));
    expect(note.slice(0, note.indexOf(' - '))).toContain('once every dynamo-writer runs the new version, with their `RULES_FILE`');
  });

  it('names every scope in its usage text (usage.ts imports nothing, to keep --help light)', () => {
    expect(USAGE).toContain(`scopes: ${SCOPES.join(', ')}.`);
    // Like dlq's, it says that with nothing set it uses the running npm start stack (README, "Manage stores and keys").
    expect(USAGE).toMatch(/DYNAMODB_ENDPOINT \(unset: the running npm start stack's DynamoDB, else AWS\sDynamoDB in AWS_REGION when set\)/);
  });

  it('runs as a command line', async () => {
    const p = await tenantsProcess(['create', 'SHOP3'], { DYNAMODB_ENDPOINT: dynalite.endpoint, DYNAMODB_TABLE: db.table });
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.output()).toBe(
      `[stderr] tally: using DynamoDB ${dynalite.endpoint} (DYNAMODB_ENDPOINT)\ntally: created tenant SHOP3 (time zone UTC)`,
    );
    const help = await tenantsProcess(['--help'], {});
    expect(await help.exited).toEqual({ code: 0, signal: null });
    expect(help.output()).toBe(USAGE);
  });

  it('refuses a bad command line, exit 2, before it looks for DynamoDB or Redis (here: none configured)', async () => {
    const none = mkdtempSync(join(tmpdir(), 'tally-tenants-cli-'));
    const env = {
      ...Object.fromEntries(
        ['DYNAMODB_ENDPOINT', 'DYNAMODB_TABLE', 'AWS_REGION', 'REDIS_URL', 'REDIS_CLUSTER_NODES', 'REDIS_SENTINELS'].map((n) => [
          n,
          undefined,
        ]),
      ),
      TALLY_DATA_DIR: none,
    };
    const tenants = async (...argv: string[]) => {
      const p = await tenantsProcess(argv, env);
      return { exit: await p.exited, lines: p.output().split('\n') };
    };
    try {
      const [crate, bogus, notTaken, badValue, arity, good] = await Promise.all([
        tenants('crate', 'S1'),
        tenants('list', '--bogus'),
        tenants('create', 'S1', '--scopes', 'ingest'),
        tenants('create', 'S1', '--history-months', 'ten'),
        tenants('delete-store'),
        tenants('create', 'S1'),
      ]);
      expect(crate.lines[0]).toBe('[stderr] tally: unknown command "crate"');
      expect(bogus.lines[0]).toMatch(/^\[stderr\] tally: Unknown option '--bogus'/);
      expect(notTaken.lines[0]).toBe('[stderr] tally: create takes no --scopes');
      expect(badValue.lines).toEqual([
        '[stderr] tally: --history-months takes a whole number of months from 1 to 1200, or "forever"; got "ten"',
      ]);
      expect(arity.lines[0]).toBe('[stderr] tally: delete-store takes <store>');
      for (const r of [crate, bogus, notTaken, badValue, arity]) {
        expect(r.exit).toEqual({ code: 2, signal: null });
        // A few lines, the reason first: never the whole help.
        expect(r.lines.length).toBeLessThan(6);
        if (r !== badValue) expect(r.lines.at(-1)).toBe(`[stderr] ${SEE_HELP}`);
        expect(r.lines.join('\n')).not.toMatch(/tally: (using|no) /);
      }
      // A good one does look, and stops at finding none.
      expect(good.exit).toEqual({ code: 1, signal: null });
      expect(good.lines).toEqual([expect.stringMatching(/^\[stderr\] tally: no DynamoDB to use: /)]);
    } finally {
      rmSync(none, { recursive: true, force: true });
    }
  });

  it('says in one line, exit 1, that it cannot reach Redis for a command that needs it (no stack trace per reconnect)', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const p = await tenantsProcess(['delete-store', 'SHOP3'], {
      DYNAMODB_ENDPOINT: dynalite.endpoint,
      DYNAMODB_TABLE: db.table,
      REDIS_URL: url,
    });
    expect(await p.exited).toEqual({ code: 1, signal: null });
    expect(p.output().split('\n')).toEqual([
      `[stderr] tally: using Redis ${url} (REDIS_URL)`,
      `[stderr] tally: using DynamoDB ${dynalite.endpoint} (DYNAMODB_ENDPOINT)`,
      `[stderr] tally: cannot reach Redis at ${url}: connect ECONNREFUSED ${url.slice('redis://'.length)}`,
    ]);
  });
});
