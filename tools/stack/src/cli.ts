import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

/** Where an operator command writes: lines to stdout and stderr (arrays in tests). */
export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** A bad command line: reported with the command's synopsis and where the help is, exit code 2. */
export class UsageError extends Error {}

/** The option values parseArgs gives for `options`. */
export type CliValues<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ args: string[]; allowPositionals: true; options: O }>
>['values'];

/**
 * What follows a usage error's reason (not the whole usage, which would push the reason off screen): the synopsis
 * lines of `command` in `usage` (its lines `  <command> <synopsis>  <description>`), none for an unknown command or
 * none named, then where the help is (`npm run <tool> -- --help`).
 */
function usageHint(tool: string, usage: string, command: string | undefined): string[] {
  const synopses = usage
    .split('\n')
    .flatMap((line) => (command && /^[a-z]/.test(command) && line.startsWith(`  ${command} `) ? [line.trim().split(/ {2,}/, 1)[0]!] : []));
  return [...synopses.map((s, i) => `${i === 0 ? 'usage:' : '      '} ${tool} ${s}`), `see: npm run ${tool} -- --help`];
}

/**
 * One run of an operator command line `<command> [arguments] [--options]` of `tool` (node:util parseArgs, with
 * `-h`/`--help` added): prints `usage` for --help, `help` or no command; otherwise runs `run`. Returns the exit
 * code: run's, 2 for a UsageError (the message, then usageHint, on stderr), 1 for any other error (its message).
 * Never prompts.
 */
export async function runCli<O extends ParseArgsOptionsConfig>(
  tool: string,
  argv: readonly string[],
  io: CliIo,
  usage: string,
  options: O,
  run: (command: string, args: string[], values: CliValues<O>) => Promise<number>,
): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
    });
    const [command, ...args] = positionals;
    if ((values as { help?: boolean }).help || command === undefined || command === 'help') {
      io.out(usage);
      return 0;
    }
    return await run(command, args, values as CliValues<O>);
  } catch (err) {
    io.err(`tally: ${err instanceof Error ? err.message : String(err)}`);
    // parseArgs' own errors (an unknown option, a missing value) are usage errors too.
    if (!(err instanceof UsageError) && !String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS_')) return 1;
    // Leniently: the command line may be the one parseArgs just refused (an unknown option, a missing value).
    const [command] = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true }).positionals;
    for (const line of usageHint(tool, usage, command)) io.err(line);
    return 2;
  }
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
