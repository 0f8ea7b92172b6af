import { parseArgs, type ParseArgsOptionDescriptor, type ParseArgsOptionsConfig } from 'node:util';

/** An option of a command line: parseArgs's, with its line in the usage (`arg` names a string option's value). */
type CliOption = ParseArgsOptionDescriptor & { help: string; arg?: string };
type Values<O> = {
  [K in keyof O]: O[K] extends { type: 'boolean' }
    ? boolean | undefined
    : O[K] extends { multiple: true }
      ? string[] | undefined
      : O[K] extends { default: string }
        ? string
        : string | undefined;
};

/**
 * parseArgs (strict) over `options`, with a usage made of their help lines: `--help` prints it and exits 0, a bad
 * command line prints the problem and the usage and exits 2; `num(name, min)` reads an option as a number >= min.
 */
export function parseCli<const O extends Record<string, CliOption>>(command: string, synopsis: string, options: O) {
  const usage = [
    `usage: ${synopsis}`,
    ...Object.entries(options).map(([name, o]) => {
      const flag = `--${name}${o.type === 'string' ? ` ${o.arg ?? 'N'}` : ''}`;
      return `  ${flag.padEnd(22)} ${o.help}${o.default !== undefined && o.type === 'string' ? ` (default ${o.default})` : ''}`;
    }),
    '  --help                 this text',
  ].join('\n');
  const fail = (message: string): never => {
    process.stderr.write(`${command}: ${message}\n${usage}\n`);
    process.exit(2);
  };
  let values: Values<O> & { help?: boolean };
  try {
    values = parseArgs({ options: { ...options, help: { type: 'boolean' } } as ParseArgsOptionsConfig, strict: true })
      .values as typeof values;
  } catch (err) {
    return fail((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const num = (name: keyof O & string, min: number): number => {
    const v = values[name];
    const n = Number(v);
    return typeof v === 'string' && Number.isFinite(n) && n >= min
      ? n
      : fail(`--${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
  };
  return { values, num, fail };
}
