import { describe, expect, it } from 'vitest';
import { runCli } from './cli';

const USAGE = `usage: t <command>

  get <id> [--p99] [--json]  a command whose option has a digit
  put <id> [more]            more: --json and --force`;

const OPTIONS = {
  p99: { type: 'boolean' },
  json: { type: 'boolean' },
  force: { type: 'boolean' },
  // In no synopsis: a default is no option given, and `run` sees it.
  limit: { type: 'string', default: '50' },
} as const;

/** One command line on USAGE and OPTIONS; `run` handles every command, listed or not, and records what it was given. */
async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const ran: unknown[] = [];
  const spec = { tool: 't', usage: USAGE, options: OPTIONS, groups: { more: ['json', 'force'] } };
  const code = await runCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l) }, spec, async (command, args, values) => {
    ran.push({ command, args, values: { ...values } });
    return 0;
  });
  return { code, out, err, ran };
}

const SEE = 'see: npm run t -- --help';

describe('runCli', () => {
  it('refuses a command that its usage does not list, whatever run would do with it, and any option with it', async () => {
    for (const argv of [['delete', 'x'], ['delete', 'x', '--force'], ['getx'], ['Get', 'x'], ['get <id>', 'x']])
      expect(await cli(...argv), argv.join(' ')).toEqual({ code: 2, out: [], err: [`tally: unknown command "${argv[0]}"`, SEE], ran: [] });
  });

  it('takes the options its synopsis shows, digits in their names too, and those of its groups; refuses the others', async () => {
    expect((await cli('get', 'a', '--p99', '--json')).ran).toEqual([
      { command: 'get', args: ['a'], values: { p99: true, json: true, limit: '50' } },
    ]);
    expect((await cli('put', 'a', '--json', '--force')).ran).toEqual([
      { command: 'put', args: ['a'], values: { json: true, force: true, limit: '50' } },
    ]);
    expect(await cli('put', 'a', '--p99')).toEqual({
      code: 2,
      out: [],
      err: ['tally: put takes no --p99', 'usage: t put <id> [more]', SEE],
      ran: [],
    });
    expect((await cli('get', 'a', '--force')).err[0]).toBe('tally: get takes no --force');
  });

  it('refuses only the options given on the command line: a default of one the synopsis does not show is no refusal', async () => {
    expect((await cli('get', 'a')).ran).toEqual([{ command: 'get', args: ['a'], values: { limit: '50' } }]);
    expect(await cli('get', 'a', '--limit', '50')).toEqual({
      code: 2,
      out: [],
      err: ['tally: get takes no --limit', 'usage: t get <id> [--p99] [--json]', SEE],
      ran: [],
    });
  });
});
