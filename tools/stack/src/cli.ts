import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

/** Where an operator command writes: lines to stdout and stderr (arrays in tests). */
export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** A bad command line: reported with the usage text, exit code 2. */
export class UsageError extends Error {}

/** The option values parseArgs gives for `options`. */
export type CliValues<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ args: string[]; allowPositionals: true; options: O }>
>['values'];

/**
 * One run of an operator command line `<command> [arguments] [--options]` (node:util parseArgs, with `-h`/`--help`
 * added): prints `usage` for --help, `help` or no command; otherwise runs `run`. Returns the exit code: run's, 2 for
 * a UsageError (the message and the usage on stderr), 1 for any other error (its message). Never prompts.
 */
export async function runCli<O extends ParseArgsOptionsConfig>(
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
    io.err(usage);
    return 2;
  }
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
