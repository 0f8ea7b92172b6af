import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { ServiceStartError } from './errors';
import { freePort } from './ports';
import { startProcess, type ProcessHandle } from './process';
import { redisAnswers } from './redis';
import { forgetDir, removeOnExit } from './reaper';
import { redisTlsConfig, type TlsFiles } from './tls';
import { sleep } from './wait';

export interface StartSentinelOptions {
  /** Port of the master to monitor on 127.0.0.1. */
  masterPort: number;
  /** Default `mymaster`. */
  name?: string;
  /** `down-after-milliseconds`: how long the master may not answer before it counts as down. Default 1000. */
  downAfterMs?: number;
  /** Sentinels that must agree the master is down (one Sentinel: 1). Default 1. */
  quorum?: number;
  /** The Sentinel's own password (`requirepass`); default none. */
  password?: string;
  /** TLS on a port of its own (`tlsPort`) with this certificate, and TLS to the master (then `masterPort` is its TLS port). */
  tls?: TlsFiles;
}

export interface SentinelHandle {
  readonly port: number;
  /** With `tls`: the port that takes TLS. */
  readonly tlsPort?: number;
  /** host and port of the master the Sentinel names now. */
  master(): Promise<{ host: string; port: number }>;
  stop(): Promise<void>;
}

/**
 * A Redis Sentinel (`redis-server <conf> --sentinel`) on a random port, monitoring the master on `masterPort` (and,
 * through it, its replicas), returned once it answers. Its config file, which Sentinel rewrites, lives in a temp dir
 * removed by stop() and at exit.
 */
export async function startSentinel(opts: StartSentinelOptions): Promise<SentinelHandle> {
  const name = opts.name ?? 'mymaster';
  const dir = mkdtempSync(join(tmpdir(), 'tally-sentinel-'));
  removeOnExit(dir);
  const port = await freePort();
  const tlsPort = opts.tls && (await freePort());
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${opts.masterPort} ${opts.quorum ?? 1}`,
      `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 1_000}`,
      `sentinel failover-timeout ${name} 10000`,
      `sentinel parallel-syncs ${name} 1`,
      ...(opts.password === undefined ? [] : [`requirepass ${opts.password}`]),
      ...(opts.tls && tlsPort ? redisTlsConfig(opts.tls, tlsPort) : []),
      '',
    ].join('\n'),
  );
  let proc: ProcessHandle | undefined;
  const cleanup = () => {
    rmSync(dir, { recursive: true, force: true });
    forgetDir(dir);
  };
  try {
    proc = await startProcess('redis-server', [conf, '--sentinel'], { name: `redis-sentinel :${port}` });
    const deadline = Date.now() + 20_000;
    while (!(await redisAnswers(port, proc.pid, opts.password))) {
      if (proc.exit || Date.now() > deadline)
        throw new ServiceStartError(`redis-sentinel on port ${port} did not answer PING; output:\n${proc.output()}`);
      await sleep(20);
    }
  } catch (err) {
    await proc?.kill('SIGKILL');
    cleanup();
    throw err;
  }
  const p = proc;
  return {
    port,
    ...(tlsPort ? { tlsPort } : {}),
    async master() {
      const c = new Redis({ port, host: '127.0.0.1', password: opts.password, maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on('error', () => {});
      try {
        const [host, masterPort] = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as [string, string];
        return { host, port: Number(masterPort) };
      } finally {
        c.disconnect();
      }
    },
    async stop() {
      if (!p.exit) await p.kill('SIGTERM');
      cleanup();
    },
  };
}
