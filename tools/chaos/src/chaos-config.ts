import { loadConfig } from '@tally/config';
import { z } from 'zod';
import type { FaultRates } from './fault-proxy';

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** The chaos run's knobs (tools/chaos/README.md); the defaults of the optional ones depend on short or long. */
const chaosEnv = z.object({
  TALLY_CHAOS: z.enum(['short', 'long']).default('short'),
  TALLY_CHAOS_SECONDS: int(10, 86_400).optional(),
  TALLY_CHAOS_EVENTS: int(100, 100_000_000).optional(),
  TALLY_CHAOS_SEED: int(0, 2 ** 31).default(1),
  TALLY_CHAOS_OUTAGE_SECONDS: int(1, 3_600).optional(),
  TALLY_CHAOS_ECHO: z.stringbool().default(false),
});

export type ChaosSettings = ReturnType<typeof chaosSettings>;

export function chaosSettings(env?: Record<string, string | undefined>) {
  const c = loadConfig(chaosEnv, env);
  const long = c.TALLY_CHAOS === 'long';
  return {
    mode: c.TALLY_CHAOS,
    seed: c.TALLY_CHAOS_SEED,
    loadSeconds: c.TALLY_CHAOS_SECONDS ?? (long ? 1_200 : 75),
    events: c.TALLY_CHAOS_EVENTS ?? (long ? 400_000 : 36_000),
    outageSeconds: c.TALLY_CHAOS_OUTAGE_SECONDS ?? (long ? 30 : 7),
    /** Proxy fault rates while the load runs. */
    rates: { throttle: 0.03, error500: 0.01, slow: 0.01, drop: 0.01 } as FaultRates,
    /** SIGKILL + restart rounds per app process (plus one crash-point run for a writer and an aggregator). */
    killsPerApp: long ? 6 : 2,
    redisRestarts: long ? 6 : 2,
    dynamoOutages: long ? 2 : 1,
    dynaliteKills: long ? 2 : 1,
    /** Masters of a local Redis Cluster (0: one redis-server) and QUEUE_SHARDS: the cluster test sets them. */
    redisMasters: 0,
    queueShards: 1,
    echo: c.TALLY_CHAOS_ECHO,
  };
}
