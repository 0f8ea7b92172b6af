import { z } from 'zod';

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const redisUrl = z
  .string()
  .regex(/^rediss?:\/\/[^\s]+$/, 'a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379');
const httpUrl = z.string().regex(/^https?:\/\/[^\s]+$/, 'an http(s):// URL, e.g. http://127.0.0.1:8000');

/** Variables every app reads (DESIGN.md "Apps, ports, endpoints"). */
export const sharedEnvShape = {
  REDIS_URL: redisUrl.default('redis://127.0.0.1:6379'),
  DYNAMODB_ENDPOINT: httpUrl.optional(),
  DYNAMODB_TABLE: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{3,255}$/, 'a DynamoDB table name: 3-255 of A-Z a-z 0-9 _ . -')
    .default('tally'),
  AWS_REGION: z.string().regex(/^[a-z0-9-]+$/, 'an AWS region such as us-east-1').default('us-east-1'),
  BUCKET_SECONDS: int(1, 86_400).default(900),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  HTTP_HOST: z.string().min(1).default('0.0.0.0'),
  /** Path to a JSON rollup-rules file; unset = the built-in e-commerce rules. */
  RULES_FILE: z.string().min(1).optional(),
  /** Redis key prefix, so several Tally installations can share one Redis. */
  KEY_PREFIX: z.string().regex(/^[a-z][a-z0-9]{0,15}$/, 'lower-case letters and digits, starting with a letter').default('t'),
  /** Test-only: name of a crash point at which the process SIGKILLs itself. Never set in production. */
  TALLY_CRASH_POINT: z.string().min(1).optional(),
};

export const collectorEnv = z.object({
  ...sharedEnvShape,
  HTTP_PORT: int(0, 65_535).default(7401),
  /** Events per request before 413. */
  MAX_EVENTS_PER_REQUEST: int(1, 100_000).default(1000),
  /** Request body bytes before 413. */
  MAX_BODY_BYTES: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
  /** Waiting events jobs beyond which requests get 429. */
  MAX_QUEUE_DEPTH: int(1, 10_000_000).default(10_000),
  /** How long an API key lookup is cached; a revoked key stops working within this. */
  KEY_CACHE_TTL_MS: int(0, 3_600_000).default(5_000),
  /** Deadline of one DynamoDB key or tenant lookup; past it the last-known keys are served (or 503 for unknown ones). */
  KEY_LOOKUP_TIMEOUT_MS: int(50, 60_000).default(1_000),
  /** Allowed clock skew for events stamped in the future. */
  CLOCK_SKEW_SECONDS: int(0, 86_400).default(300),
  /** Events older than this are refused (late events within it land in their own day). */
  LATENESS_HORIZON_DAYS: int(1, 3_650).default(35),
  /** How long a batch id (from Idempotency-Key) is remembered. */
  DEDUPE_WINDOW_SECONDS: int(60, 30 * 86_400).default(86_400),
  /** Requests one store may send per INGEST_BUDGET_WINDOW_MS; over it that store alone gets 429 (0: no per-store budget). */
  INGEST_BUDGET_REQUESTS: int(0, 10_000_000).default(500),
  /** The window of INGEST_BUDGET_REQUESTS; a store over its budget gets Retry-After until its window ends. */
  INGEST_BUDGET_WINDOW_MS: int(100, 3_600_000).default(1_000),
  /** Stores whose budget differs from INGEST_BUDGET_REQUESTS: `store=requests,store=requests`. */
  INGEST_BUDGET_OVERRIDES: z
    .string()
    .regex(/^(?:[A-Za-z0-9_.:-]+=\d{1,8}(?:,[A-Za-z0-9_.:-]+=\d{1,8})*)?$/, 'store=requests pairs separated by commas, e.g. shop1=50,shop2=2000')
    .default('')
    .transform((v) => new Map(v === '' ? [] : v.split(',').map((pair) => [pair.split('=')[0]!, Number(pair.split('=')[1])] as const))),
});

export const aggregatorEnv = z.object({
  ...sharedEnvShape,
  HTTP_PORT: int(0, 65_535).default(7403),
  /** Parallel events jobs per process. */
  AGGREGATOR_CONCURRENCY: int(1, 256).default(8),
  DEDUPE_WINDOW_SECONDS: int(60, 30 * 86_400).default(86_400),
  /** Run the sealer (seal, fold, schedule flushes) in this process. */
  SEALER_ENABLED: bool.default(true),
  /** Job lock; a job of a crashed worker is retried after about this long (BullMQ lockDuration/stalledInterval). */
  JOB_LOCK_MS: int(1_000, 600_000).default(30_000),
});

export const writerEnv = z.object({
  ...sharedEnvShape,
  HTTP_PORT: int(0, 65_535).default(7404),
  WRITER_CONCURRENCY: int(1, 256).default(16),
  /** Upper bound of the retry delay while DynamoDB is throttling or down. */
  WRITER_MAX_BACKOFF_MS: int(100, 3_600_000).default(60_000),
  /** Job lock; a job of a crashed worker is retried after about this long (BullMQ lockDuration/stalledInterval). */
  JOB_LOCK_MS: int(1_000, 600_000).default(30_000),
});

export const queryApiEnv = z.object({
  ...sharedEnvShape,
  HTTP_PORT: int(0, 65_535).default(7402),
  KEY_CACHE_TTL_MS: int(0, 3_600_000).default(5_000),
  /** Idle time after which a visitor's cached history expires (the session). */
  SESSION_IDLE_SECONDS: int(1, 86_400).default(1_800),
  /** Max entities in one totals request. */
  MAX_ENTITIES_PER_REQUEST: int(1, 1_000).default(100),
  /** Max DynamoDB items one query may read (20 BatchGetItem calls by default); a query needing more answers 400. */
  MAX_ITEMS_PER_QUERY: int(10, 100_000).default(2_000),
  /** Deadline of one DynamoDB key or tenant lookup; past it the last-known keys are served (or 503 for unknown ones). */
  KEY_LOOKUP_TIMEOUT_MS: int(50, 60_000).default(1_000),
  /** Deadline of one Redis command and of one DynamoDB read of a query; past it the request answers 503. */
  QUERY_TIMEOUT_MS: int(50, 60_000).default(3_000),
  /** Directory of the built dashboard; unset = apps/dashboard/dist next to the sources. */
  DASHBOARD_DIR: z.string().min(1).optional(),
});

/** Every app's schema by app name; the ops checks compare compose files against these. */
export const appEnvSchemas = {
  collector: collectorEnv,
  'bucket-aggregator': aggregatorEnv,
  'dynamo-writer': writerEnv,
  'query-api': queryApiEnv,
} as const;

export type AppName = keyof typeof appEnvSchemas;
export type CollectorConfig = z.infer<typeof collectorEnv>;
export type AggregatorConfig = z.infer<typeof aggregatorEnv>;
export type WriterConfig = z.infer<typeof writerEnv>;
export type QueryApiConfig = z.infer<typeof queryApiEnv>;
export type SharedConfig = z.infer<z.ZodObject<typeof sharedEnvShape>>;
