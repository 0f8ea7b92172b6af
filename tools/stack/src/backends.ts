import path from 'node:path';
import { StackError } from './errors';
import { procCmdline, runningStack } from './run-file';

type Env = Record<string, string | undefined>;

export interface BackendChoice {
  /** `env` with REDIS_URL / DYNAMODB_ENDPOINT, DYNAMODB_TABLE and AWS_REGION filled in from the running stack. */
  env: Env;
  /** One line per backend: what is used and why, for stderr. */
  notes: string[];
}

/**
 * Which Redis and DynamoDB an operator tool uses. A variable that is set wins. Otherwise the `npm start` stack
 * running on the data directory (TALLY_DATA_DIR, default `.data` under `cwd`, the repository root under npm run)
 * is used, read from its run file. With neither, it refuses to guess: a Redis on 6379 or AWS credentials that
 * happen to be around are not necessarily Tally's.
 */
export function chooseBackends(
  env: Env,
  need: { redis?: boolean; dynamo?: boolean },
  cwd: string = process.cwd(),
  readCmdline: (pid: number) => string | undefined = procCmdline,
): BackendChoice {
  const dataDir = env['TALLY_DATA_DIR'] ? path.resolve(cwd, env['TALLY_DATA_DIR']) : path.join(cwd, '.data');
  const stack = runningStack(dataDir, readCmdline);
  const shown = stack && (path.relative(cwd, stack.file).startsWith('..') ? stack.file : path.relative(cwd, stack.file));
  const from = stack ? `the npm start stack, pid ${stack.pid}, ${shown}` : '';
  const out: Env = { ...env };
  const notes: string[] = [];
  const none = (what: string, variables: string) =>
    new StackError(
      'TALLY_ERR_NO_BACKEND',
      `no ${what} to use: ${variables} is not set and no npm start stack is running on ${dataDir}. Start one (npm start), or set ${variables}.`,
    );

  if (need.redis) {
    if (env['REDIS_URL']) notes.push(`Redis ${env['REDIS_URL']} (REDIS_URL)`);
    else if (stack) {
      out['REDIS_URL'] = stack.backends.redisUrl;
      notes.push(`Redis ${stack.backends.redisUrl} (${from})`);
    } else throw none('Redis', 'REDIS_URL');
  }
  if (need.dynamo) {
    if (env['DYNAMODB_ENDPOINT']) notes.push(`DynamoDB ${env['DYNAMODB_ENDPOINT']} (DYNAMODB_ENDPOINT)`);
    else if (stack) {
      out['DYNAMODB_ENDPOINT'] = stack.backends.dynamoEndpoint;
      out['DYNAMODB_TABLE'] ??= stack.backends.table;
      out['AWS_REGION'] ??= stack.backends.region;
      notes.push(`DynamoDB ${stack.backends.dynamoEndpoint}, table ${out['DYNAMODB_TABLE']} (${from})`);
    } else if (env['AWS_REGION']) notes.push(`AWS DynamoDB in ${env['AWS_REGION']} (AWS_REGION, no DYNAMODB_ENDPOINT)`);
    else throw none('DynamoDB', 'DYNAMODB_ENDPOINT (or AWS_REGION for AWS DynamoDB)');
  }
  return { env: out, notes };
}

/**
 * chooseBackends for an operator tool's main: says on stderr which backends it uses, or why there are none (and
 * exits 1). A call for help (`--help`, `-h`, `help`, no arguments) needs no backend and gets `env` unchanged.
 */
export function backendEnvOrExit(env: Env, need: { redis?: boolean; dynamo?: boolean }, argv: readonly string[]): Env {
  if (argv.length === 0 || argv[0] === 'help' || argv.includes('--help') || argv.includes('-h')) return env;
  try {
    const choice = chooseBackends(env, need);
    for (const note of choice.notes) process.stderr.write(`tally: using ${note}\n`);
    return choice.env;
  } catch (err) {
    process.stderr.write(`tally: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
