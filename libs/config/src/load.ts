import type { z } from 'zod';
import { ConfigError } from './errors';

type Env = Record<string, string | undefined>;

/**
 * Parses the environment with a zod object schema. Empty strings count as unset.
 * Throws ConfigError whose message is one line naming the first bad variable.
 */
export function loadConfig<S extends z.ZodObject>(schema: S, env: Env = process.env): z.infer<S> {
  const cleaned: Env = Object.fromEntries(Object.keys(schema.shape).flatMap((key) => (env[key] ? [[key, env[key]]] : [])));
  const result = schema.safeParse(cleaned);
  if (result.success) {
    if (cleaned['REDIS_SENTINELS'] && cleaned['REDIS_CLUSTER_NODES'])
      throw new ConfigError('REDIS_SENTINELS: expected it or REDIS_CLUSTER_NODES, not both; both are set', 'REDIS_SENTINELS');
    return result.data;
  }
  const issue = result.error.issues[0]!;
  const variable = String(issue.path[0] ?? '?');
  throw new ConfigError(`${variable}: expected ${describe(issue)}; ${shown(variable, cleaned[variable])}`, variable);
}

/** Variables whose value a configuration error never shows: every *_TOKEN, *_PASSWORD, *_SECRET and *_KEY. */
const SECRET = /(^|_)(TOKEN|PASSWORD|SECRET|KEY)S?$/;

/**
 * The rejected value as the error line shows it: a secret's length only; any other with what comes before its last `@`
 * (a URL's user name and password, scheme or not) and its query (ioredis reads `?password=`) as `***`.
 */
function shown(variable: string, value: string | undefined): string {
  if (value === undefined) return 'it is not set';
  if (SECRET.test(variable)) return `got ${value.length} characters (not shown)`;
  return `got ${JSON.stringify(value.replace(/^([a-z][\w+.-]*:\/\/)?[\s\S]*@/i, '$1***@').replace(/\?[\s\S]*$/, '?***'))}`;
}

function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'too_small':
      return `a value >= ${String(issue.minimum)}`;
    case 'too_big':
      return `a value <= ${String(issue.maximum)}`;
    case 'invalid_value':
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return issue.message.replace(/^Invalid string: must match pattern .*$/, 'a valid value');
    case 'invalid_type':
      return issue.expected === 'number' ? 'a number' : `a ${issue.expected}`;
    default:
      return issue.message;
  }
}

/** loadConfig for a composition root: a bad variable prints one line and exits 1. */
export function loadConfigOrExit<S extends z.ZodObject>(schema: S, env: Env = process.env): z.infer<S> {
  try {
    return loadConfig(schema, env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`tally: configuration error: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

/** The only other process.env access allowed: the raw environment, for child processes a launcher starts. */
export function rawEnv(): Env {
  return { ...process.env };
}
