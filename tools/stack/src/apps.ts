import { appArgs } from '@tally/testing';
import type { StackEnv } from './config';
import type { ProcessSpec } from './supervisor';

export interface AppDefinition {
  name: 'collector' | 'query-api' | 'bucket-aggregator' | 'dynamo-writer';
  defaultPort: number;
  /** The stack's variable that fixes this app's port. */
  portVariable: 'COLLECTOR_PORT' | 'QUERY_API_PORT' | 'AGGREGATOR_PORT' | 'WRITER_PORT';
}

/** The four apps, in start order; ports are docs/DESIGN.md's defaults. */
export const APPS: readonly AppDefinition[] = [
  { name: 'collector', defaultPort: 7401, portVariable: 'COLLECTOR_PORT' },
  { name: 'query-api', defaultPort: 7402, portVariable: 'QUERY_API_PORT' },
  { name: 'bucket-aggregator', defaultPort: 7403, portVariable: 'AGGREGATOR_PORT' },
  { name: 'dynamo-writer', defaultPort: 7404, portVariable: 'WRITER_PORT' },
];

export interface Backends {
  redisUrl: string;
  dynamoEndpoint: string;
  table: string;
  region: string;
  logLevel: StackEnv['LOG_LEVEL'];
}

/**
 * How to run one app: `node --import tsx apps/<app>/src/main.ts` from the repo root, with the caller's
 * environment plus the backends the stack started and the app's HTTP_PORT.
 */
export function appProcessSpec(
  app: AppDefinition,
  port: number,
  backends: Backends,
  baseEnv: Record<string, string | undefined>,
  repoRoot: string,
  nodeBin: string = process.execPath,
): ProcessSpec {
  return {
    name: app.name,
    command: nodeBin,
    args: appArgs(app.name),
    cwd: repoRoot,
    env: {
      // A local stack listens on loopback only (containers keep the apps' default 0.0.0.0); HTTP_HOST overrides.
      HTTP_HOST: '127.0.0.1',
      ...baseEnv,
      REDIS_URL: backends.redisUrl,
      DYNAMODB_ENDPOINT: backends.dynamoEndpoint,
      DYNAMODB_TABLE: backends.table,
      AWS_REGION: backends.region,
      LOG_LEVEL: backends.logLevel,
      HTTP_PORT: String(port),
    },
  };
}
