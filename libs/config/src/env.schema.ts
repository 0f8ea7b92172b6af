import { z } from 'zod';
import { clusterNodes } from './host-list';

// `.describe()` gives each variable's meaning; tools/stack/src/env-tables.ts renders the README's tables from these.
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');
/**
 * A URL as its client reads it (ioredis and the AWS SDK parse it with `new URL()` and decode its user name and
 * password): of the scheme `kind` tests, without spaces, with a host and a path `path` takes.
 */
const url = (kind: RegExp, what: string, example: string, path = { test: /^/, what: '' }, needsHost = true) =>
  z.string().superRefine((value, ctx) => {
    const problem = urlProblem(value, kind, path.test, needsHost);
    const message = {
      kind: `${what}, e.g. ${example}`,
      parse: `${what} that parses: a port from 1 to 65535, / ? # % in a user name or password percent-encoded (%2F %3F %23 %25)`,
      host: `${what} with a host, e.g. ${example}`,
      path: `${what} ${path.what}`,
    };
    if (problem) ctx.addIssue({ code: 'custom', message: message[problem] });
  });
function urlProblem(value: string, kind: RegExp, path: RegExp, needsHost: boolean): 'kind' | 'parse' | 'host' | 'path' | undefined {
  if (!kind.test(value) || /\s/.test(value)) return 'kind';
  const u = URL.parse(value);
  try {
    if (!u || u.port === '0') return 'parse';
    decodeURIComponent(u.username + u.password);
  } catch {
    return 'parse';
  }
  return needsHost && !u.hostname ? 'host' : path.test(u.pathname) ? undefined : 'path';
}
// Without a host ioredis connects to 127.0.0.1:6379 (`redis:///0`; `rediss:///` lends TLS to REDIS_CLUSTER_NODES).
const redisUrl = url(
  /^rediss?:\/\//,
  'a redis:// or rediss:// URL',
  'redis://127.0.0.1:6379',
  { test: /^(\/\d{0,9})?$/, what: 'whose path is empty or a database number, e.g. redis://127.0.0.1:6379/0' },
  false,
);
const httpUrl = url(/^https?:\/\//, 'an http(s):// URL', 'http://127.0.0.1:8000');
const httpPort = (port: number) =>
  int(0, 65_535).default(port).describe('Port of `/healthz`, `/readyz`, `/metrics` and (collector, query API) the app’s API.');
const optionalPath = (meaning: string) => z.string().min(1).optional().describe(meaning);

/** Variables most apps read; each app's schema picks the ones it reads. */
export const sharedEnvShape = {
  REDIS_URL: redisUrl
    .default('redis://127.0.0.1:6379')
    .describe(
      'Redis holding the queues, buckets and outbox (AOF on, `noeviction`); `rediss://` for TLS (a private CA: Node’s NODE_EXTRA_CA_CERTS); `/N` at the end picks database N; `/ ? # %` in the user name or password percent-encoded (`%2F %3F %23 %25`).',
    ),
  REDIS_CLUSTER_NODES: clusterNodes
    .optional()
    .describe(
      'Redis Cluster seed nodes `host:port,host:port`; when set, REDIS_URL only lends its username, password and TLS (unset = the single Redis of REDIS_URL).',
    ),
  REDIS_SENTINELS: clusterNodes
    .optional()
    .describe(
      'Redis Sentinel nodes `host:port,host:port`; when set, the apps ask them for the master of REDIS_SENTINEL_MASTER and follow its failovers, and REDIS_URL only lends its username, password and TLS. Not with REDIS_CLUSTER_NODES.',
    ),
  REDIS_SENTINEL_MASTER: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,128}$/, 'a Sentinel master name: 1-128 of A-Z a-z 0-9 _ . -')
    .default('mymaster')
    .describe('The master name the Sentinels monitor (`sentinel monitor <name> …`), with REDIS_SENTINELS.'),
  REDIS_SENTINEL_PASSWORD: z
    .string()
    .min(1)
    .optional()
    .describe(
      'The Sentinels’ own password (`requirepass` in sentinel.conf), with REDIS_SENTINELS; unset = none. The master’s is REDIS_URL’s, and a `rediss://` REDIS_URL means TLS to the Sentinels too.',
    ),
  QUEUE_SHARDS: int(1, 256)
    .default(1)
    .describe(
      'Shards of the `events` and `dynamo-writes` queues and of the sealer’s work set (by store); every app of an installation must use the same.',
    ),
  DYNAMODB_ENDPOINT: httpUrl
    .optional()
    .describe(
      'A DynamoDB emulator’s endpoint (dynalite, DynamoDB Local), signed with dummy credentials: local emulators only; for AWS leave it unset (= AWS DynamoDB in `AWS_REGION`, with the AWS SDK’s default credentials).',
    ),
  DYNAMODB_TABLE: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{3,255}$/, 'a DynamoDB table name: 3-255 of A-Z a-z 0-9 _ . -')
    .default('tally')
    .describe('The one table, keys `pk` S / `sk` S.'),
  AWS_REGION: z
    .string()
    .regex(/^[a-z0-9-]+$/, 'an AWS region such as us-east-1')
    .default('us-east-1')
    .describe('AWS region of the DynamoDB client.'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('pino log level.'),
  HTTP_HOST: z
    .string()
    .min(1)
    .default('0.0.0.0')
    .describe('Address the HTTP server binds to (`npm start` passes 127.0.0.1 unless set; containers keep 0.0.0.0).'),
  RULES_FILE: optionalPath('Path to a JSON rollup-rules file; unset = the built-in e-commerce rules.'),
  KEY_PREFIX: z
    .string()
    .regex(/^[a-z][a-z0-9]{0,15}$/, 'lower-case letters and digits, starting with a letter')
    .default('t')
    .describe('Redis key prefix of the counters and the queues, so several Tally installations can share one Redis.'),
  TALLY_CRASH_POINT: optionalPath(
    'Test-only: a crash point `name` (or `name@N`: the N-th time it is reached) at which the process SIGKILLs itself. Never set in production.',
  ),
};
const shared = z.object(sharedEnvShape);

const UNKNOWN_KEY_LOOKUPS_PER_SECOND = int(0, 100_000)
  .default(1_000)
  .describe(
    'DynamoDB lookups per second, per collector or query-API process, of API keys not cached as existing (new keys, made-up ones, or keys found not to exist longer than KEY_CACHE_TTL_MS ago), from a bucket of 10 seconds of them (a restarted replica looks up the keys in use at once: the keys of 10,000 stores within a few seconds at the default). Past it such a key answers 503 with Retry-After: 1 without a lookup, counted in `tally_key_lookups_throttled_total`; keys cached as existing are never refused, and a real new key works once the bucket has a lookup again. 0 = no limit.',
  );

const KEY_CACHE_TTL_MS = int(0, 3_600_000)
  .default(5_000)
  .describe(
    "How long an API key or tenant lookup is cached: a revoked key, a deleted store or a changed tenant setting takes effect within this while DynamoDB answers. During a DynamoDB outage the last-known answers are served, a key's only if DynamoDB confirmed it less than 1 hour before (libs/tenants `STALE_KEY_MAX_MS`): a key revoked just before an outage works at most an hour after its last confirmation, and a key not confirmed within the hour answers 503 until DynamoDB is back. Only keys of the issued format (`tly_` and 43 characters) are looked up; keys found not to exist are cached apart (10,000, least recently used first), so made-up keys cannot push real ones out of the 100,000 cached.",
  );
const KEY_LOOKUP_TIMEOUT_MS = int(50, 60_000)
  .default(1_000)
  .describe(
    'Deadline of each DynamoDB request of a key or tenant lookup (the collector tries twice, the query API once); past it the last-known keys are served (or 503 for unknown ones).',
  );
const DEDUPE_WINDOW_SECONDS = int(60, 30 * 86_400)
  .default(86_400)
  .describe(
    "How long a batch id is remembered from its apply, and a deleted store's or erased visitor's tombstone from the deletion; the aggregator keeps both 10% longer (at least 300 s more), so a batch it lets through just inside the window still finds them. An Idempotency-Key stays bound to the fingerprint of its events for two windows and that slack (a batch is applied within a window of its acceptance). The aggregator refuses, to the failed set, an events batch accepted longer ago (a replay, a stalled or queued job): keep it well above the longest queue backlog to ride out. The aggregators publish theirs in Redis; the collectors, @tally/client and the dlq tool follow it, and the query API and the tenants tool keep the tombstones for it when it is longer than their own (saying so). Lower it on every aggregator at once (stop those on the longer window before starting the new ones): one still on the longer window would apply again a batch retried after the new window, whose record a new one kept only that long.",
  );
const TOP_HISTORY_DAYS = int(31, 3_650)
  .default(100)
  .describe(
    "Days the daily rankings of top lists are kept after a day's last count: Redis zsets, about 4 per store and day with the default rules and most of Redis's memory at scale (`npm run cost -- size --top-history-days N`); a top list reaches back this less 2 days. Set it alike on the bucket-aggregators (they keep the rankings) and the query API (it reaches back no further than its own value allows). A change applies to the days counted from then on, not to rankings already expired: each aggregator records in Redis since when it keeps its value (at start-up, then every 5 minutes), and a top list refuses (400 `from`) a day whose ranking a shorter retention may have let expire rather than list it short. So after a raise top lists reach further back only as the longer-kept days accumulate, and after a cut, or while any aggregator runs a lower value, only as far as the lowest allows. Aggregators of versions before this variable record nothing (they keep 100 days): upgrade them all before raising it. At least 31, so that `last30d` (the dashboard's range) is always answered.",
  );
const METRICS_TOKEN = z
  .string()
  .regex(/^[\x21-\x7e]{16,512}$/, '16 to 512 printable characters without spaces, e.g. `openssl rand -hex 32`')
  .optional()
  .describe(
    'A bearer token (16 to 512 printable characters without spaces) `/metrics` asks for (`Authorization: Bearer <token>`; in Prometheus `authorization: { credentials_file: … }`), 401 without it; `/healthz` and `/readyz` stay open. Set it where clients reach `HTTP_PORT` (the collector and query API serve their APIs there). Unset = `/metrics` open to whoever reaches the port.',
  );
const JOB_LOCK_MS = int(1_000, 600_000)
  .default(30_000)
  .describe('Job lock; a job of a crashed worker is retried within one to two times this (BullMQ lockDuration = stalledInterval).');

const REDIS_WAIT_REPLICAS = int(0, 16)
  .default(0)
  .describe(
    'Redis replicas that must hold a write before it counts as done (`WAIT`), so a failover to a promoted replica loses nothing acknowledged. The collector answers 202 only once they hold the batch (fewer in time: 503 `TALLY_ERR_REDIS_REPLICAS_BEHIND`; Redis holds the batch, and a retry with the same Idempotency-Key counts it once; a request without one was given one, named by the `idempotencyKey` of the answer); the bucket-aggregator completes an events job only once they hold its apply (on a Redis Cluster the master of the store, which need not be that of the queue; fewer in time: the job waits and retries, and its retry finds the batch applied); the dynamo-writer writes a row to DynamoDB only once they hold its outbox (fewer in time: the flush waits and retries). 0 = no wait (a single Redis). Set it alike on all three. The Redis user needs `INFO` (to count the replicas and, after a failover, tell the promoted replica from the old master); the three apps warn at start-up when Redis refuses it or has fewer replicas.',
  );
const REDIS_WAIT_TIMEOUT_MS = int(10, 60_000)
  .default(1_000)
  .describe(
    'How long one `WAIT` for REDIS_WAIT_REPLICAS replicas lasts at most. A request (collector), batch (bucket-aggregator) or flush (dynamo-writer) that comes while one is in flight waits for it to end, then shares the next: up to twice this in all.',
  );

export const collectorEnv = shared.omit({ TALLY_CRASH_POINT: true }).extend({
  HTTP_PORT: httpPort(7401),
  MAX_EVENTS_PER_REQUEST: int(1, 100_000).default(1000).describe('Events per request before 413.'),
  MAX_BODY_BYTES: int(1024, 64 * 1024 * 1024)
    .default(1024 * 1024)
    .describe('Request body bytes before 413.'),
  MAX_QUEUE_DEPTH: int(1, 10_000_000)
    .default(10_000)
    .describe(
      "Waiting events jobs in a store's queue shard beyond which the store's requests get 429: a limit per shard (QUEUE_SHARDS), so one store's backlog does not refuse the stores of other shards.",
    ),
  KEY_CACHE_TTL_MS,
  KEY_LOOKUP_TIMEOUT_MS,
  UNKNOWN_KEY_LOOKUPS_PER_SECOND,
  CLOCK_SKEW_SECONDS: int(0, 82_800)
    .default(300)
    .describe(
      'Allowed clock skew for events stamped in the future; at most 23 h, the margin top lists keep before a daily ranking may expire.',
    ),
  LATENESS_HORIZON_DAYS: int(1, 3_650)
    .default(35)
    .describe('Events older than this are refused (late events within it land in their own day).'),
  DEDUPE_WINDOW_SECONDS,
  INGEST_BUDGET_EVENTS_PER_SECOND: int(0, 10_000_000)
    .default(50_000)
    .describe(
      'Events per second one store may send (a token bucket in Redis shared by every collector; a request counts at least INGEST_MIN_EVENTS_PER_REQUEST events); over it that store alone gets 429 with Retry-After. A batch larger than the bucket passes when the bucket is full and leaves it in debt, which the next requests wait out: over time a store never gets more than its budget, whatever its batch sizes. A tenant record may set its own (`npm run tenants -- set-ingest-budget`). 0: only stores whose tenant record sets a rate are limited.',
    ),
  INGEST_BUDGET_BURST_SECONDS: int(1, 3_600)
    .default(2)
    .describe(
      'Seconds of its budget a store may send at once after a quiet spell (the token bucket holds rate × this many events; a larger batch waits for a full bucket, then the store waits until its budget has paid for the rest).',
    ),
  INGEST_MIN_EVENTS_PER_REQUEST: int(1, 100_000)
    .default(10)
    .describe(
      "The fewest events a request is charged from its store's ingest budget, however few it has: each request costs a queue job and a dedupe record whatever its size, so a store sends at most its budget / this many requests per second (its bucket / this at once). 1: a request costs its events only.",
    ),
  REDIS_WAIT_REPLICAS,
  REDIS_WAIT_TIMEOUT_MS,
  METRICS_TOKEN,
});

export const aggregatorEnv = shared.extend({
  BUCKET_SECONDS: int(1, 86_400).default(900).describe('Length of a Redis bucket in seconds (works down to 1, for tests).'),
  HTTP_PORT: httpPort(7403),
  AGGREGATOR_CONCURRENCY: int(1, 256).default(8).describe('Parallel `events` jobs per queue shard: up to this × QUEUE_SHARDS per process.'),
  DEDUPE_WINDOW_SECONDS,
  SEALER_ENABLED: bool.default(true).describe('Run the sealer (seal, fold, schedule flushes) in this process.'),
  TOP_HISTORY_DAYS,
  JOB_LOCK_MS,
  REDIS_WAIT_REPLICAS,
  REDIS_WAIT_TIMEOUT_MS,
  METRICS_TOKEN,
});

export const writerEnv = shared.extend({
  HTTP_PORT: httpPort(7404),
  WRITER_CONCURRENCY: int(1, 256)
    .default(16)
    .describe('Parallel `dynamo-writes` jobs per queue shard: up to this × QUEUE_SHARDS per process.'),
  WRITER_MAX_BACKOFF_MS: int(100, 3_600_000)
    .default(60_000)
    .describe(
      'Upper bound of the retry delay of a flush while DynamoDB is throttling or down, or the Redis replicas are behind (REDIS_WAIT_REPLICAS).',
    ),
  REDIS_WAIT_REPLICAS,
  REDIS_WAIT_TIMEOUT_MS,
  JOB_LOCK_MS,
  METRICS_TOKEN,
});

export const queryApiEnv = shared.omit({ TALLY_CRASH_POINT: true }).extend({
  HTTP_PORT: httpPort(7402),
  METRICS_TOKEN,
  KEY_CACHE_TTL_MS,
  SESSION_IDLE_SECONDS: int(1, 86_400).default(1_800).describe("Idle time after which a visitor's cached history expires (the session)."),
  MAX_ENTITIES_PER_REQUEST: int(1, 1_000).default(100).describe('Max entities in one totals request.'),
  MAX_ITEMS_PER_QUERY: int(10, 100_000)
    .default(2_000)
    .describe('Max DynamoDB items one query may read (20 BatchGetItem calls by default); a query needing more answers 400.'),
  KEY_LOOKUP_TIMEOUT_MS,
  QUERY_TIMEOUT_MS: int(50, 60_000)
    .default(3_000)
    .describe(
      'Deadline of one Redis command and of each DynamoDB request of a query (a read is tried twice); past it the request answers 503, as after 5 s of retries of keys DynamoDB left unprocessed.',
    ),
  QUERY_RATE_LIMIT_PER_SECOND: int(0, 1_000_000)
    .default(5_000)
    .describe(
      "Requests per second one store may make to the `/v1` read routes (series, totals, top, segments, store), over all its keys and every query-API replica (counted in Redis, in fixed windows of QUERY_RATE_WINDOW_SECONDS; each replica takes a busy store's requests from the count in leases of at most 1/64 of the limit, so a store spread over R replicas may be refused up to R/64 of it early); over it that store alone gets 429 `TALLY_ERR_RATE_LIMITED` with Retry-After (the rest of the window), counted in `tally_http_rate_limited_total`. Every request counts one, whatever it reads (a totals request reads at most MAX_ITEMS_PER_QUERY items). The default is far above what a dashboard or one sequential client makes; set it to a store's fair share of the fleet. 0 = no limit.",
    ),
  QUERY_RATE_WINDOW_SECONDS: int(1, 3_600)
    .default(1)
    .describe(
      'Length of the fixed windows QUERY_RATE_LIMIT_PER_SECOND counts in: a store may make rate × this many requests in each window, all at once if it likes (so up to twice that across the end of one window and the start of the next).',
    ),
  UNKNOWN_KEY_LOOKUPS_PER_SECOND,
  DASHBOARD_DIR: optionalPath(
    "Directory of the built dashboard; unset = the repository's apps/dashboard/dist (from the sources or the bundle in dist/; the image sets /app/dashboard).",
  ),
  DEDUPE_WINDOW_SECONDS,
  TOP_HISTORY_DAYS,
  TOP_MAX_MEMBERS: int(1_000, 10_000_000)
    .default(300_000)
    .describe(
      "Most ranking members one `/v1/top` request may union in Redis: the members of the daily rankings of the days asked, summed (an id ranked on 30 days counts 30 times). Redis serves no one else during the union (about 1.3 µs per member when every id is distinct, the worst case: 30,000 took 40 ms, so the default up to about 0.4 s; about 0.15 µs when the days share their ids, 200,000 in 29 ms), so a range past it answers 400 `from` (narrow the range) instead of stalling every store's ingest and queries. By default a 30-day list fits stores ranking up to 10,000 different ids a day, a 92-day one up to 3,260. Lower it to bound the worst case more tightly; raise it only knowing that cost.",
    ),
  ADMIN_OPERATOR_TOKEN: z
    .string()
    .regex(/^[A-Za-z0-9_.~+/=-]{32,256}$/, 'at least 32 characters of A-Z a-z 0-9 _ . ~ + / = -')
    .optional()
    .describe(
      'Operator credential of the `/v1/operator` routes (create, list, show, change and delete stores; change takes the ingest budget too, which store admins cannot set): at least 32 (up to 256) characters of A-Z a-z 0-9 `_ . ~ + / = -`, e.g. `openssl rand -hex 32`; unset = those routes are off (403).',
    ),
  ADMIN_JOBS_TIMEOUT_MS: int(1_000, 3_600_000)
    .default(60_000)
    .describe(
      'How long a store deletion or visitor erasure waits for the running jobs of that store or visitor before answering 503 (call again).',
    ),
});

/** Every app's schema by app name: exactly the variables the app reads (the ops checks and the README use them). */
export const appEnvSchemas = {
  collector: collectorEnv,
  'bucket-aggregator': aggregatorEnv,
  'dynamo-writer': writerEnv,
  'query-api': queryApiEnv,
} as const;

/** The operator tools' schemas (the `tools` image runs them): what each tool's main reads, and the ops checks too. */
export const toolEnvSchemas = {
  'create-table': shared,
  tenants: shared.extend({ DEDUPE_WINDOW_SECONDS }),
  dlq: shared
    .pick({
      REDIS_URL: true,
      REDIS_CLUSTER_NODES: true,
      REDIS_SENTINELS: true,
      REDIS_SENTINEL_MASTER: true,
      REDIS_SENTINEL_PASSWORD: true,
      KEY_PREFIX: true,
      QUEUE_SHARDS: true,
    })
    .extend({ DEDUPE_WINDOW_SECONDS }),
} as const;

export type AppName = keyof typeof appEnvSchemas;
export type CollectorConfig = z.infer<typeof collectorEnv>;
