import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { NodeHttpHandler } from '@smithy/node-http-handler';

export interface DynamoClientOptions {
  /** A DynamoDB-compatible endpoint such as dynalite (`http://127.0.0.1:4567`); unset = AWS for `region`. */
  endpoint?: string;
  region: string;
  /** Attempts per request including the first (SDK default 3). */
  maxAttempts?: number;
  /** Deadline for connecting and for the whole request, so a down endpoint fails fast. Default 3000. */
  requestTimeoutMs?: number;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 3_000;

/**
 * A DynamoDB client with connect and request deadlines. With `endpoint` set it signs with dummy static
 * credentials (`local`/`local`), which local emulators accept; without it, the default AWS credential chain applies.
 */
export function createDynamoClient(opts: DynamoClientOptions): DynamoDBClient {
  const timeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  return new DynamoDBClient({
    region: opts.region,
    ...(opts.endpoint ? { endpoint: opts.endpoint, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } } : {}),
    ...(opts.maxAttempts !== undefined ? { maxAttempts: opts.maxAttempts } : {}),
    requestHandler: new NodeHttpHandler({
      connectionTimeout: timeoutMs,
      requestTimeout: timeoutMs,
      // Without this a breached requestTimeout is only logged as a warning and the request keeps waiting.
      throwOnRequestTimeout: true,
    }),
  });
}

/** The installation's DynamoDB as its environment names it. */
export interface DynamoTarget {
  DYNAMODB_ENDPOINT?: string | undefined;
  AWS_REGION: string;
}

/** createDynamoClient for the installation's DynamoDB (DYNAMODB_ENDPOINT, AWS_REGION), with this client's attempts and deadline. */
export function connectDynamo(
  target: DynamoTarget,
  opts: Pick<DynamoClientOptions, 'maxAttempts' | 'requestTimeoutMs'> = {},
): DynamoDBClient {
  return createDynamoClient({ endpoint: target.DYNAMODB_ENDPOINT, region: target.AWS_REGION, ...opts });
}

/** Where a client sends its requests, for messages: the endpoint URL, or `AWS (<region>)`. */
export async function describeEndpoint(client: DynamoDBClient): Promise<string> {
  const region = await client.config.region();
  if (!client.config.endpoint) return `AWS (${region})`;
  const ep = await client.config.endpoint();
  const port = ep.port ? `:${ep.port}` : '';
  const path = ep.path && ep.path !== '/' ? ep.path : '';
  return `${ep.protocol}//${ep.hostname}${port}${path}`;
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ECONNABORTED',
]);

/** True when a request got no HTTP answer at all (refused, reset, DNS, connect or request deadline). */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === 'TimeoutError') return true;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && NETWORK_CODES.has(code);
}
