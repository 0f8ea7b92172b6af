import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServiceStartError } from './errors';
import { freePort } from './ports';
import { startProcess, type ProcessExit, type ProcessHandle } from './process';
import { forgetDir, removeOnExit } from './reaper';
import { sleep } from './wait';

export interface StartRedisOptions {
  /** AOF on (default true), as in production. */
  appendonly?: boolean;
  /** Default `everysec`. */
  appendfsync?: 'always' | 'everysec' | 'no';
  /** Data directory; default a fresh temp dir, removed by stop() and at exit. A given dir is never removed. */
  dir?: string;
  /** Default a random free port. */
  port?: number;
  /** Extra `redis-server` arguments, e.g. `['--maxmemory', '50mb']`. */
  args?: string[];
  /** The server binary. Default `redis-server` from PATH. */
  binary?: string;
  /** How long to wait for PONG (AOF loading included). Default 30 s. */
  startTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before SIGKILL. Default 10 s. */
  stopTimeoutMs?: number;
  /** Passed to startProcess: false for a launcher whose redis-server must outlive a crash of it. */
  reap?: boolean;
  /** Called with every line redis-server prints. */
  onLine?: (text: string) => void;
}

export interface RedisHandle {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Pid of the current (or last) redis-server process. */
  readonly pid: number;
  /** Whether redis-server is running (false after kill() until restart()). */
  readonly running: boolean;
  /** Settles when the current redis-server process exits (a crash, kill() or stop()); never rejects. */
  readonly exited: Promise<ProcessExit>;
  /** The last lines redis-server printed. */
  output(): string;
  /** Final teardown: graceful shutdown, then the temp dir is removed. Idempotent. */
  stop(): Promise<void>;
  /**
   * Sends `signal` (default SIGKILL: a crash) and waits until redis-server has exited. SIGSTOP / SIGCONT freeze
   * and thaw it without waiting.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts redis-server again on the same port and dir (after kill(), or gracefully stopping it first); AOF data survives. */
  restart(): Promise<void>;
}

export interface RedisServerArgs {
  port: number;
  dir: string;
  /** Default true. */
  appendonly?: boolean;
  /** Default `everysec`. */
  appendfsync?: 'always' | 'everysec' | 'no';
  /** More arguments, after the defaults (a later option wins). */
  args?: readonly string[];
}

/**
 * The arguments BullMQ's production guide asks for: AOF (fsynced every second unless told otherwise), no
 * eviction, no RDB snapshots; bound to the loopback on `port`, files in `dir`, logging to stdout.
 */
export function redisServerArgs(o: RedisServerArgs): string[] {
  return [
    '--port',
    String(o.port),
    '--bind',
    '127.0.0.1',
    '--dir',
    o.dir,
    '--save',
    '',
    '--appendonly',
    o.appendonly === false ? 'no' : 'yes',
    '--appendfsync',
    o.appendfsync ?? 'everysec',
    '--maxmemory-policy',
    'noeviction',
    '--daemonize',
    'no',
    '--logfile',
    '',
    ...(o.args ?? []),
  ];
}

/** The bind failed; startRedis retries on another port unless the caller chose this one. */
class PortInUseError extends ServiceStartError {}

/**
 * Starts the system `redis-server` on a random free port with its own data dir, `--save ''`, AOF per `opts`
 * and `maxmemory-policy noeviction`, and waits until it answers PING. The server is SIGKILLed when the test
 * process exits.
 */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisHandle> {
  const ownedDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'tally-redis-'));
  if (ownedDir) removeOnExit(dir);
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const binary = opts.binary ?? 'redis-server';

  const launch = async (port: number): Promise<ProcessHandle> => {
    const args = redisServerArgs({ port, dir, appendonly: opts.appendonly, appendfsync: opts.appendfsync, args: opts.args });
    let proc: ProcessHandle;
    try {
      proc = await startProcess(binary, args, { name: `redis-server :${port}`, reap: opts.reap, onLine: opts.onLine });
    } catch (err) {
      if (err instanceof ServiceStartError && (err.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
        throw new ServiceStartError(`${binary} is not on PATH; install it with: apt-get install redis-server`, { cause: err });
      }
      throw err;
    }
    const deadline = Date.now() + startTimeoutMs;
    while (!(await redisAnswers(port, proc.pid))) {
      if (proc.exit) {
        const message = `redis-server on port ${port} exited during start-up; output:\n${proc.output()}`;
        throw /address already in use/i.test(proc.output()) ? new PortInUseError(message) : new ServiceStartError(message);
      }
      if (Date.now() > deadline) {
        await proc.kill('SIGKILL');
        throw new ServiceStartError(
          `redis-server on port ${port} did not answer PING within ${startTimeoutMs}ms; output:\n${proc.output()}`,
        );
      }
      await sleep(20);
    }
    return proc;
  };

  let port = opts.port ?? (await freePort());
  let proc: ProcessHandle | undefined;
  for (let attempt = 1; !proc; attempt++) {
    try {
      proc = await launch(port);
    } catch (err) {
      // Someone took the free port between freePort() and the bind: pick another, unless the caller chose it.
      const retry = err instanceof PortInUseError && opts.port === undefined && attempt < 5;
      if (!retry) {
        if (ownedDir) cleanup(dir);
        throw err;
      }
      port = await freePort();
    }
  }

  let current: ProcessHandle = proc;
  let stopped = false;

  const handle: RedisHandle = {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    get pid() {
      return current.pid;
    },
    get running() {
      return current.exit === undefined;
    },
    get exited() {
      return current.exited;
    },
    output: () => current.output(),
    async stop() {
      if (stopped) return;
      stopped = true;
      if (!current.exit) {
        current.signal('SIGCONT');
        await current.kill('SIGTERM', { timeoutMs: opts.stopTimeoutMs });
      }
      if (ownedDir) cleanup(dir);
    },
    async kill(signal = 'SIGKILL') {
      if (signal === 'SIGSTOP' || signal === 'SIGCONT' || signal === 'SIGTSTP') {
        current.signal(signal);
        return;
      }
      await current.kill(signal);
    },
    async restart() {
      if (stopped) throw new Error(`redis on port ${port} was stopped for good; start a new one with startRedis()`);
      if (!current.exit) {
        current.signal('SIGCONT');
        await current.kill('SIGTERM');
      }
      try {
        current = await launch(port);
      } catch (err) {
        if (err instanceof PortInUseError) {
          throw new ServiceStartError(`cannot restart redis: port ${port} was taken by another process meanwhile`, { cause: err });
        }
        throw err;
      }
    },
  };
  return handle;
}

function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  forgetDir(dir);
}

/**
 * `INFO server` then `PING` over a raw socket (after `AUTH password`, given one). Ready when PING gives +PONG (not -LOADING while it reads the AOF)
 * and, given a `pid`, the server that answers is that process (another server may hold the port when our bind
 * failed).
 */
export function redisAnswers(port: number, pid?: number, password?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write(`${password === undefined ? '' : `AUTH ${password}\r\n`}INFO server\r\nPING\r\n`));
    socket.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      if (password !== undefined) {
        if (buf.length < 5) return;
        if (!buf.startsWith('+OK\r\n')) return done(false);
        buf = buf.slice(5);
        password = undefined;
      }
      // Reply 1: a bulk string `$<len>\r\n<info>\r\n` (or an error line). Reply 2: `+PONG\r\n` or `-LOADING ...`.
      if (buf.startsWith('-')) return done(false);
      const header = /^\$(\d+)\r\n/.exec(buf);
      if (!header) return;
      const start = header[0].length;
      const len = Number(header[1]);
      if (buf.length < start + len + 2) return;
      const info = buf.slice(start, start + len);
      const rest = buf.slice(start + len + 2);
      if (!rest.includes('\r\n')) return;
      done((pid === undefined || new RegExp(`^process_id:${pid}\\r?$`, 'm').test(info)) && rest.startsWith('+PONG'));
    });
  });
}

/**
 * Whether Redis has written every command it answered to its AOF file, given its `INFO persistence` text
 * (`aof_buffer_length:0`). Under appendfsync everysec it holds new writes in memory, up to 2 s, while the last
 * background fsync is still running, so a SIGKILL before this is true can lose acknowledged writes.
 */
export const aofWritten = (persistenceInfo: string): boolean => /^aof_buffer_length:0\r?$/m.test(persistenceInfo);
