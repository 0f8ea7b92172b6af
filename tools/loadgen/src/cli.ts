import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { loadConfig, toolEnvSchemas } from '@tally/config';
import { STORE_ID_PATTERN, timeZoneProblem } from '@tally/key-layout';
import { redisNote, runningStack, stackBackend, stackLayout } from '@tally/stack';
import { z } from 'zod';
import type { StoreSpec } from './generator';

/** A string option (the default), a number of at least `min` (at most `max`, whole with `integer`) or a flag; `help`:
 * its usage line (a `\n` continues under the first line), `arg`: its value's name there. */
type CliOption = {
  type?: 'string' | 'boolean';
  default?: string;
  min?: number;
  max?: number;
  integer?: boolean;
  multiple?: true;
  help: string;
  arg?: string;
};
export type Values<O> = {
  [K in keyof O]: O[K] extends { type: 'boolean' }
    ? boolean | undefined
    : O[K] extends { multiple: true }
      ? string[] | undefined
      : (O[K] extends { min: number } ? number : string) | (O[K] extends { default: string } ? never : undefined);
};

/**
 * parseArgs (strict) over `options` with a usage made of their help lines: `--help` prints it and exits 0; a bad
 * command line (numbers checked, what `fail` is called with, an Error a `checked` check throws) prints why and it, exit 2.
 */
export function parseCli<const O extends Record<string, CliOption>>(command: string, synopsis: string, options: O) {
  const lines = Object.entries(options).map(([name, o]) => {
    const flag = `--${name}${o.type === 'boolean' ? '' : ` ${o.arg ?? 'N'}`}`;
    const help = `${o.help}${o.default === undefined ? '' : ` (default ${o.default})`}`;
    return `  ${flag.padEnd(24)} ${help.replaceAll('\n', `\n${' '.repeat(27)}`)}\n`;
  });
  const usage = `usage: ${synopsis}\n${lines.join('')}  --help                   this text\n`;
  const fail = (message: string): never => {
    process.stderr.write(`${command}: ${message}\n${usage}`);
    process.exit(2);
  };
  const checked = <T>(check: () => T): T => {
    try {
      return check();
    } catch (err) {
      return fail((err as Error).message);
    }
  };
  // (parseArgs ignores the keys of an option it does not know: min, help, …)
  const config = Object.fromEntries(Object.entries(options).map(([name, o]) => [name, { type: 'string', ...o }]));
  const values: Record<string, unknown> = checked(
    () => parseArgs({ options: { ...config, help: { type: 'boolean' } } as ParseArgsOptionsConfig, strict: true }).values,
  );
  if (values['help']) {
    process.stdout.write(usage);
    process.exit(0);
  }
  for (const [name, { min, max, integer }] of Object.entries(options)) {
    const v = values[name];
    if (min === undefined || v === undefined) continue;
    const n = String(v).trim() === '' ? NaN : Number(v);
    if (!(integer ? Number.isSafeInteger(n) : Number.isFinite(n)) || n < min || (max !== undefined && n > max))
      fail(
        `--${name} must be ${integer ? 'a whole number' : 'a number'} ${max === undefined ? `>= ${min}` : `from ${min} to ${max}`}, got ${JSON.stringify(v)}`,
      );
    values[name] = n;
  }
  return { values: values as Values<O>, fail, checked };
}

/**
 * Where `npm run loadgen` sends without --fleet, and why: --url (or --redis-url, REDIS_URL), else the running `npm
 * start` stack's, else 127.0.0.1. A stack whose run file lacks it (an older npm start's) is a StackError saying so.
 */
export function loadTarget(what: 'collector' | 'redis', given: string | undefined, env: Record<string, string | undefined>, cwd?: string) {
  const collector = what === 'collector';
  const variable = collector ? undefined : env['REDIS_URL'];
  if (given || variable) return [given || variable!, given ? (collector ? '--url' : '--redis-url') : 'REDIS_URL'] as const;
  const stack = runningStack(env, cwd);
  const instead = collector ? 'pass --url URL' : 'pass --redis-url URL or set REDIS_URL';
  const value = stackBackend(stack, collector ? 'collectorUrl' : 'redisUrl', instead);
  if (value) return [value, stack.from] as const;
  return [collector ? 'http://127.0.0.1:7401' : 'redis://127.0.0.1:6379', 'no npm start stack runs'] as const;
}

/**
 * How `--via client` reaches the queues: REDIS_CLUSTER_NODES or REDIS_SENTINELS (without --redis-url), else loadTarget's
 * Redis; the environment's KEY_PREFIX and QUEUE_SHARDS, else (on the stack's Redis) the layout it gave its apps;
 * checked as the dlq tool checks them. `said` is what to print.
 */
export function clientTarget(given: string | undefined, env: Record<string, string | undefined>, cwd?: string) {
  const topology = given ? undefined : (['REDIS_CLUSTER_NODES', 'REDIS_SENTINELS'] as const).find((n) => env[n]);
  const [url, from] = topology ? [env['REDIS_URL'], topology] : loadTarget('redis', given, env, cwd);
  const fromStack = !given && !topology && !env['REDIS_URL'] ? stackLayout(runningStack(env, cwd)) : {};
  const ownNames = ['KEY_PREFIX', 'QUEUE_SHARDS', 'REDIS_SENTINEL_PASSWORD', ...(topology ? [topology, 'REDIS_SENTINEL_MASTER'] : [])];
  const own = Object.fromEntries(ownNames.filter((n) => env[n]).map((n) => [n, env[n]]));
  const c = loadConfig(toolEnvSchemas.dlq, { ...fromStack, ...own, REDIS_URL: url });
  const where = redisNote({ ...fromStack, ...own, REDIS_URL: c.REDIS_URL });
  const { REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD } = c;
  const sentinels = REDIS_SENTINELS && { REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD };
  const connection = { REDIS_URL: c.REDIS_URL, REDIS_CLUSTER_NODES: c.REDIS_CLUSTER_NODES, ...sentinels };
  const said = `${where} (${from}), KEY_PREFIX ${c.KEY_PREFIX}, QUEUE_SHARDS ${c.QUEUE_SHARDS}`;
  return { options: { connection, keyPrefix: c.KEY_PREFIX, queueShards: c.QUEUE_SHARDS }, said };
}

/** The running `npm start` stack's demo store, ingest key and `demo-keys.json` (written on its first run), if any. */
export function stackDemoStore(env: Record<string, string | undefined>, cwd?: string) {
  const stack = runningStack(env, cwd);
  if (stack.pid === undefined) return undefined;
  try {
    const keys = JSON.parse(readFileSync(join(stack.dataDir, 'demo-keys.json'), 'utf8')) as { store?: unknown; ingestKey?: unknown };
    if (typeof keys?.store === 'string' && typeof keys.ingestKey === 'string')
      return { store: keys.store, ingestKey: keys.ingestKey, file: join(dirname(stack.file), 'demo-keys.json') };
  } catch {
    // none (npm start had not set it up), or not readable: no default store
  }
  return undefined;
}

/**
 * The stores of `--stores STORE:ZONE,…`, each split at its last `:` (a store id may hold `:`, a zone never does),
 * checked as a tenant is (id, IANA zone), no id twice; else an Error saying what is wrong.
 */
export function parseStores(list: string): StoreSpec[] {
  const seen = new Set<string>();
  return list.split(',').map((entry) => {
    const colon = entry.lastIndexOf(':');
    const [id, timeZone] = [entry.slice(0, Math.max(0, colon)), entry.slice(colon + 1)];
    if (colon < 0 || !id || !timeZone) throw new Error(`--stores entries are STORE:ZONE, got ${JSON.stringify(entry)}`);
    if (!STORE_ID_PATTERN.test(id))
      throw new Error(
        `--stores: store id ${JSON.stringify(id)} is invalid: 1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit`,
      );
    const problem = timeZoneProblem(timeZone);
    if (problem) throw new Error(`--stores: time zone ${JSON.stringify(timeZone)} of store ${id} ${problem}`);
    if (seen.has(id)) throw new Error(`--stores names store ${id} twice`);
    seen.add(id);
    return { id, timeZone };
  });
}

/** The ingest keys of `--keys-file`: a JSON object of store -> key, each a non-empty string; else an Error in one line. */
export function readKeysFile(file: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    const { message } = err as Error;
    if (err instanceof SyntaxError) throw new Error(`--keys-file ${file} is not JSON: ${message.split('\n')[0]}`);
    throw new Error(`cannot read --keys-file ${file}: ${message}`);
  }
  const parsed = z.record(z.string(), z.string().min(1)).safeParse(json);
  const store = parsed.error?.issues[0]?.path[0];
  if (typeof store === 'string')
    throw new Error(
      `--keys-file ${file}: the key of store ${JSON.stringify(store)} must be a non-empty string, got ${JSON.stringify((json as Record<string, unknown>)[store])}`,
    );
  if (!parsed.success)
    throw new Error(
      `--keys-file ${file} must hold a JSON object {"STORE":"KEY",…}, got ${Array.isArray(json) ? 'an array' : JSON.stringify(json)}`,
    );
  return new Map(Object.entries(parsed.data));
}

/** `--url` checked: an absolute http:// or https:// URL (without its trailing `/`); else an Error saying so. */
export function checkCollectorUrl(url: string): string {
  const protocol = URL.parse(url)?.protocol;
  if (protocol !== 'http:' && protocol !== 'https:')
    throw new Error(`--url takes the collector's http:// or https:// URL, such as http://127.0.0.1:7401, got ${JSON.stringify(url)}`);
  return url.replace(/\/+$/, '');
}
