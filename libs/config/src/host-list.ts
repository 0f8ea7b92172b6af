import { z } from 'zod';

/**
 * `host:port,host:port,...` (REDIS_CLUSTER_NODES, REDIS_SENTINELS) as `{ host, port }[]`: also how @tally/client reads a
 * Redis target given in this form.
 */
export const clusterNodes = z
  .string()
  .regex(/^[^\s,:]+:\d{1,5}(,[^\s,:]+:\d{1,5})*$/, 'a comma-separated list of host:port, e.g. 10.0.0.1:7000,10.0.0.2:7000')
  .refine(
    (s) => s.split(/[:,]/).every((x, i) => i % 2 === 0 || (Number(x) >= 1 && Number(x) <= 65_535)),
    'host:port pairs with ports from 1 to 65535',
  )
  .transform((s) =>
    s.split(',').map((node) => {
      const at = node.lastIndexOf(':');
      return { host: node.slice(0, at), port: Number(node.slice(at + 1)) };
    }),
  );
