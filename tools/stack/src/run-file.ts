import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describeRedisTarget } from '@tally/queues';
import { isAlive, waitForPidGone } from '@tally/testing';
import { StackError } from './stores';

type Env = Record<string, string | undefined>;
type ReadCmdline = (pid: number) => string | undefined;

/**
 * `<dataDir>/stack.json`: it stops a second stack from sharing the data directory (two redis-servers on one AOF), lets
 * the next start clean up after a SIGKILLed stack, and tells `npm run dlq`, `tenants` and `loadgen` the backends.
 */
export interface RunState {
  stackPid: number;
  startedAt: string;
  /** Child pid by name; `match` is a piece of its command line, checked before we signal it. */
  children: Record<string, { pid: number; match: string }>;
  backends?: StackBackends;
}

/** The variable behind each layout member of the backends, recorded when the stack set it (not the Sentinels' password). */
export const LAYOUT = {
  redisClusterNodes: 'REDIS_CLUSTER_NODES',
  redisSentinels: 'REDIS_SENTINELS',
  redisSentinelMaster: 'REDIS_SENTINEL_MASTER',
  keyPrefix: 'KEY_PREFIX',
  queueShards: 'QUEUE_SHARDS',
} as const;

type StackBackends = Record<'redisUrl' | 'dynamoEndpoint' | 'table' | 'region' | 'collectorUrl', string> &
  Partial<Record<keyof typeof LAYOUT, string>>;

/** The command line of `pid` from /proc (Linux): '' when the process is gone, undefined without /proc. */
export function procCmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return existsSync('/proc/self/cmdline') ? '' : undefined;
  }
}

/** A live pid still running the stack; without /proc, assume so rather than risk two stacks on one data directory. */
function isStack(pid: number, readCmdline: ReadCmdline): boolean {
  const cmdline = isAlive(pid) ? readCmdline(pid) : '';
  return cmdline === undefined || cmdline.includes('stack/src/main');
}

/** A JSON file's content; undefined when it is missing or no JSON. */
export function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** A path as the user would type it: relative below `cwd`, else absolute. */
export function shortPath(p: string, cwd = process.cwd()): string {
  const rel = path.relative(cwd, p);
  return rel === '' ? '.' : rel.startsWith('..') || path.isAbsolute(rel) ? p : rel;
}

export class RunFile {
  readonly file: string;
  private state: RunState;

  constructor(dataDir: string, stackPid: number = process.pid) {
    this.file = path.join(dataDir, 'stack.json');
    this.state = { stackPid, startedAt: new Date().toISOString(), children: {} };
  }

  read = () => readJson<RunState>(this.file);

  /** Refuses to run beside a live stack on the data directory, and stops the leftovers of a dead one: one note each. */
  async claim(readCmdline: ReadCmdline = procCmdline): Promise<string[]> {
    const previous = this.read();
    const notes: string[] = [];
    if (previous && previous.stackPid !== this.state.stackPid && isStack(previous.stackPid, readCmdline)) {
      const message = `another Tally stack (pid ${previous.stackPid}) is running on ${path.dirname(this.file)}; stop it first, or set TALLY_DATA_DIR to another directory`;
      throw new StackError('TALLY_ERR_STACK_RUNNING', message);
    }
    for (const [name, { pid, match }] of Object.entries(previous?.children ?? {})) {
      const cmdline = isAlive(pid) ? readCmdline(pid) : '';
      if (cmdline === undefined)
        notes.push(`${name} (pid ${pid}) from a previous run may still be running; cannot check its command line here`);
      if (!cmdline?.includes(match)) continue; // gone, or the pid was reused by something else
      try {
        process.kill(pid, 'SIGTERM');
        if (!(await waitForPidGone(pid, 10_000))) process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      notes.push(`stopped ${name} (pid ${pid}) left running by a previous stack that did not shut down`);
    }
    this.update({});
    return notes;
  }

  /** Records a child that started (added to the others) or the backends, at once. */
  update(patch: Pick<Partial<RunState>, 'children' | 'backends'>): void {
    this.state = { ...this.state, ...patch, children: { ...this.state.children, ...patch.children } };
    mkdirSync(path.dirname(this.file), { recursive: true });
    // Owner only: backends.redisUrl is REDIS_URL as given, password and all (the tools connect with it).
    writeFileSync(`${this.file}.${process.pid}.tmp`, JSON.stringify(this.state, null, 2) + '\n', { mode: 0o600 });
    renameSync(`${this.file}.${process.pid}.tmp`, this.file);
  }

  /** Removes the file if this stack claimed it (not another stack's, which claim() refused to share). */
  remove(): void {
    if (this.read()?.stackPid === this.state.stackPid) rmSync(this.file, { force: true });
  }
}

/** The `npm start` stack running on TALLY_DATA_DIR (default `<cwd>/.data`): its pid and backends, undefined when none runs. */
export function runningStack(env: Env, cwd: string = process.cwd(), readCmdline: ReadCmdline = procCmdline) {
  const dataDir = env['TALLY_DATA_DIR'] ? path.resolve(cwd, env['TALLY_DATA_DIR']) : path.join(cwd, '.data');
  const runFile = new RunFile(dataDir);
  const state = runFile.read();
  const running = state !== undefined && typeof state.stackPid === 'number' && isStack(state.stackPid, readCmdline);
  const file = shortPath(runFile.file, cwd);
  return {
    dataDir,
    pid: running ? state.stackPid : undefined,
    // None while it starts; an older `npm start`'s lacks the members added since: read them with stackBackend.
    backends:
      running && typeof state.backends === 'object' && state.backends !== null ? (state.backends as Partial<StackBackends>) : undefined,
    /** Where they come from, for the tools' `using …` lines. */
    from: `the npm start stack, pid ${state?.stackPid}, ${file}`,
    file,
  };
}

/** The running stack's backend `name`, undefined when no stack runs; a StackError when its run file does not say. */
export function stackBackend(stack: ReturnType<typeof runningStack>, name: keyof StackBackends, instead: string): string | undefined {
  if (stack.pid === undefined) return undefined;
  const value = stack.backends?.[name];
  if (typeof value === 'string') return value;
  const what = `the running npm start stack (pid ${stack.pid})`;
  const message = stack.backends
    ? `${what} has a run file (${stack.file}) that predates ${name}: it was started by an older version of npm start. ` +
      `Restart npm start (Ctrl-C, then npm start again), or ${instead}.`
    : `${what} has not recorded its backends in its run file (${stack.file}): it is still starting (wait until it prints ` +
      `its URLs), or an older version of npm start started it (restart it). Or ${instead}.`;
  throw new StackError('TALLY_ERR_STALE_RUN_FILE', message);
}

/** A tool's Redis and DynamoDB, with a note each: a variable set, else the running stack's; never a guess (6379, AWS credentials). */
export function chooseBackends(
  env: Env,
  need: { redis?: boolean; dynamo?: boolean },
  cwd: string = process.cwd(),
  readCmdline: ReadCmdline = procCmdline,
): { env: Env; notes: string[] } {
  const stack = runningStack(env, cwd, readCmdline);
  const { dataDir, from } = stack;
  const out: Env = { ...env };
  const notes: string[] = [];
  const none = (what: string, variables: string) =>
    new StackError(
      'TALLY_ERR_NO_BACKEND',
      `no ${what} to use: ${variables} is not set and no npm start stack is running on ${dataDir}. Start one (npm start), or set ${variables}.`,
    );

  if (need.redis) {
    const given = redisVariables.find((n) => env[n]);
    const redisUrl = given ? undefined : stackBackend(stack, 'redisUrl', 'set REDIS_URL');
    if (given) notes.push(`${redisNote(env)} (${given})`);
    else if (redisUrl !== undefined) {
      out['REDIS_URL'] = redisUrl;
      // The installation's layout as the stack gave it to its apps: the same cluster, prefix and queue shards.
      const layout = stackLayout(stack);
      Object.assign(out, { ...layout, ...pickSet(env, ['KEY_PREFIX', 'QUEUE_SHARDS']) });
      notes.push(`${redisNote({ ...layout, REDIS_URL: redisUrl })} (${from})`);
    } else throw none('Redis', 'REDIS_URL');
  }
  if (need.dynamo) {
    const instead = 'set DYNAMODB_ENDPOINT, DYNAMODB_TABLE and AWS_REGION';
    const endpoint = env['DYNAMODB_ENDPOINT'] ? undefined : stackBackend(stack, 'dynamoEndpoint', instead);
    if (env['DYNAMODB_ENDPOINT']) notes.push(`DynamoDB ${env['DYNAMODB_ENDPOINT']} (DYNAMODB_ENDPOINT)`);
    else if (endpoint !== undefined) {
      out['DYNAMODB_ENDPOINT'] = endpoint;
      out['DYNAMODB_TABLE'] ??= stackBackend(stack, 'table', instead);
      out['AWS_REGION'] ??= stackBackend(stack, 'region', instead);
      notes.push(`DynamoDB ${endpoint}, table ${out['DYNAMODB_TABLE']} (${from})`);
    } else if (env['AWS_REGION']) notes.push(`AWS DynamoDB in ${env['AWS_REGION']} (AWS_REGION, no DYNAMODB_ENDPOINT)`);
    else throw none('DynamoDB', 'DYNAMODB_ENDPOINT (or AWS_REGION for AWS DynamoDB)');
  }
  return { env: out, notes };
}

const redisVariables = ['REDIS_CLUSTER_NODES', 'REDIS_SENTINELS', 'REDIS_URL'] as const;

/** Which Redis a tool uses, as it says on stderr: the cluster's nodes, the Sentinels, or REDIS_URL without its password. */
export function redisNote(r: Env): string {
  if (r['REDIS_CLUSTER_NODES']) return `Redis Cluster ${r['REDIS_CLUSTER_NODES']}`;
  if (r['REDIS_SENTINELS']) return `Redis Sentinel ${r['REDIS_SENTINELS']}`;
  return `Redis ${describeRedisTarget({ REDIS_URL: r['REDIS_URL'] ?? '' })}`;
}

/** The LAYOUT variables the running stack set for its apps. */
export function stackLayout(stack: ReturnType<typeof runningStack>): Env {
  const given = Object.entries(LAYOUT).map(([member, name]) => [name, stack.backends?.[member as keyof typeof LAYOUT]]);
  return pickSet(Object.fromEntries(given), Object.values(LAYOUT));
}

const pickSet = (from: Env, names: readonly string[]): Env =>
  Object.fromEntries(names.filter((n) => typeof from[n] === 'string' && from[n] !== '').map((n) => [n, from[n]]));

/** chooseBackends for an operator tool's command, said on stderr; exits 1 when there are none. */
export function backendEnvOrExit(env: Env, need: { redis?: boolean; dynamo?: boolean }): Env {
  try {
    const choice = chooseBackends(env, need);
    for (const note of choice.notes) process.stderr.write(`tally: using ${note}\n`);
    return choice.env;
  } catch (err) {
    process.stderr.write(`tally: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
