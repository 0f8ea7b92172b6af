import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

/** Where an operator command writes: lines to stdout and stderr (arrays in tests). */
export type CliIo = { out: (line: string) => void; err: (line: string) => void };

export const STDIO: CliIo = {
  out: (line) => void process.stdout.write(`${line}\n`),
  err: (line) => void process.stderr.write(`${line}\n`),
};

/** A bad command line: reported with the command's synopsis and where the help is, exit code 2. */
export class UsageError extends Error {}

export type CliValues<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ args: string[]; allowPositionals: true; options: O }>
>['values'];

interface CliSpec<O extends ParseArgsOptionsConfig> {
  tool: string;
  usage: string;
  options: O;
  groups?: Record<string, readonly string[]>;
  notTaken?: (command: string, option: string) => string;
}

/** The synopses of `command` in `usage` (its lines `  <command> <synopsis>  <description>`); none for an unknown command. */
function synopses(usage: string, command: string | undefined): string[] {
  if (!command || !/^[a-z][\w-]*$/.test(command)) return [];
  return usage.split('\n').flatMap((line) => (line.startsWith(`  ${command} `) ? [line.trim().split(/ {2,}/, 1)[0]!] : []));
}

/**
 * One run of `<command> [arguments] [--options]` of `tool`: `usage` for --help, `help` or no command, else `run` for a
 * command `usage` lists, which takes only the options its synopses show (`groups`: words standing for several). Exit 2
 * on a usage error, with the command's synopses only (the whole usage would push the reason off screen); 1 on others.
 */
export async function runCli<O extends ParseArgsOptionsConfig>(
  argv: readonly string[],
  io: CliIo,
  { tool, usage, options, groups = {}, notTaken }: CliSpec<O>,
  run: (command: string, args: string[], values: CliValues<O>) => Promise<number>,
): Promise<number> {
  try {
    const { values, positionals, tokens } = parseArgs({
      args: [...argv],
      allowPositionals: true,
      tokens: true,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
    });
    const [command, ...args] = positionals;
    if ((values as { help?: boolean }).help || command === undefined || command === 'help') {
      io.out(usage);
      return 0;
    }
    const shown = synopses(usage, command);
    if (shown.length === 0) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    const words = shown.flatMap((s) => s.split(/[^\w-]+/));
    const takes = words.flatMap((w) => (w.startsWith('--') ? [w.slice(2)] : Object.hasOwn(groups, w) ? groups[w]! : []));
    for (const token of tokens)
      if (token.kind === 'option' && token.name in options && !takes.includes(token.name))
        throw new UsageError(`${command} takes no --${token.name}${notTaken?.(command, token.name) ?? ''}`);
    return await run(command, args, values as CliValues<O>);
  } catch (err) {
    io.err(`tally: ${reason(err)}`);
    // parseArgs' own errors (an unknown option, a missing value) are usage errors too.
    if (!(err instanceof UsageError) && !String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS_')) return 1;
    // Leniently: the command line may be the one parseArgs just refused (an unknown option, a missing value).
    const [command] = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true }).positionals;
    const shown = synopses(usage, command);
    for (const [i, s] of shown.entries()) io.err(`${i === 0 ? 'usage:' : '      '} ${tool} ${s}`);
    io.err(`see: npm run ${tool} -- --help`);
    return 2;
  }
}

/**
 * What a refused command line says. parseArgs' unknown-option message goes on with a hint for positionals that start
 * with `-` (`… as in '-- "--bogus"`, its quote never closed): only its first sentence is kept.
 */
function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if ((err as { code?: unknown }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')
    return err.message.replace(/\. To specify a positional[^]*$/, '');
  return err.message;
}

/** `text` on one line (each run of whitespace a space), cut to `max` characters with `…`. */
export function oneLine(text: string, max = Infinity): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** Rows as aligned columns, two spaces apart; the last column is not padded. */
export function alignColumns(rows: ReadonlyArray<readonly string[]>): string[] {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => r[c]?.length ?? 0))) ?? [];
  return rows.map((r) =>
    r
      .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd(),
  );
}
