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
  /** How many other Sentinels this one knows for the master (`SENTINEL SENTINELS`). */
  peers(): Promise<number>;
  /** Its last lines of output (the Sentinel's log: +sdown, +switch-master, +convert-to-slave, +tilt…). */
  output(): string;
  /** SIGKILLs it (a Sentinel that dies); stop() then only removes its files. */
  kill(): Promise<void>;
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
  /** One `SENTINEL <what> <name>` on a connection of its own. */
  const ask = async (what: string) => {
    const c = new Redis({ port, host: '127.0.0.1', password: opts.password, maxRetriesPerRequest: 0, retryStrategy: () => null });
    c.on('error', () => {});
    try {
      return await c.call('SENTINEL', what, name);
    } finally {
      c.disconnect();
    }
  };
  return {
    port,
    ...(tlsPort ? { tlsPort } : {}),
    async master() {
      const [host, masterPort] = (await ask('GET-MASTER-ADDR-BY-NAME')) as [string, string];
      return { host, port: Number(masterPort) };
    },
    output: () => p.output(),
    async peers() {
      return ((await ask('SENTINELS')) as unknown[]).length;
    },
    async kill() {
      if (!p.exit) await p.kill('SIGKILL');
    },
    async stop() {
      if (!p.exit) await p.kill('SIGTERM');
      cleanup();
    },
  };
}

/**
 * `count` Redis Sentinels monitoring the same master with `quorum` (default: a majority of them), returned once each
 * knows all the others (they find each other through the master's `__sentinel__:hello` channel, every 2 s), so a
 * failover can be agreed from the start. On failure every one already started is stopped.
 */
export async function startSentinels(
  count: number,
  opts: Omit<StartSentinelOptions, 'quorum'> & { quorum?: number; timeoutMs?: number },
): Promise<SentinelHandle[]> {
  const quorum = opts.quorum ?? Math.floor(count / 2) + 1;
  const started = await Promise.allSettled(Array.from({ length: count }, () => startSentinel({ ...opts, quorum })));
  const sentinels = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  try {
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    while ((await Promise.all(sentinels.map((s) => s.peers()))).some((n) => n < count - 1)) {
      if (Date.now() > deadline) throw new ServiceStartError(`${count} Redis Sentinels did not all find each other in time`);
      await sleep(100);
    }
    return sentinels;
  } catch (err) {
    await Promise.all(sentinels.map((s) => s.stop()));
    throw err;
  }
}
