// npm run redis-cluster: a local Redis Cluster of 3 masters (redis-server with AOF, appendfsync everysec, on random
// loopback ports, joined with redis-cli --cluster create) for `npm start` to run on. Prints the REDIS_CLUSTER_NODES line, runs until
// Ctrl-C, then stops the servers and removes their files.
import { startRedisCluster } from '@tally/testing';

const cluster = await startRedisCluster({ masters: 3 });
process.stdout.write(
  `redis cluster ready (3 masters, AOF with appendfsync everysec: for development). In another terminal:\n  REDIS_CLUSTER_NODES=${cluster.nodesEnv} QUEUE_SHARDS=3 npm start\nCtrl-C stops it.\n`,
);
let stopping: Promise<void> | undefined;
const stop = () => void (stopping ??= cluster.stop().then(() => process.exit(0)));
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, stop);
