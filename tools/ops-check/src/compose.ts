import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { rawEnv } from '@tally/config';
import { parse, parseDocument } from 'yaml';

/** A compose service as `docker-compose config` prints it: merged, interpolated, long syntax where it has one. */
export interface ComposeService {
  build?: { context?: string; target?: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string | null>;
  /** Short syntax (`"7401:7401"`, `"9000"`) or, as `docker-compose config` prints a port with no host side, long. */
  ports?: Array<string | number | { target: number | string }>;
  expose?: Array<string | number>;
  depends_on?: Record<string, { condition?: string }>;
  healthcheck?: { test?: string[]; disable?: boolean };
  /** `source:target[:mode]`; bind sources relative to the compose file's directory (`./…`). */
  volumes?: string[];
  stop_grace_period?: string;
}

type ComposeFile = { services: Record<string, ComposeService> };

const cache = new Map<string, ComposeFile>();

/**
 * The compose file as Compose itself reads it: `docker-compose config` (Debian's docker-compose package, no
 * engine needed) validates it, applies the `<<:` merges and interpolates `${VAR:-default}` with `vars` as the
 * host environment. Throws with Compose's message when the file is invalid.
 */
export function composeConfig(text: string, vars: Record<string, string | undefined> = {}): ComposeFile {
  const key = JSON.stringify([text, vars]);
  if (cache.has(key)) return cache.get(key)!;
  // Compose 1.x predates the top-level `name` (the project name, which changes nothing `config` prints).
  const doc = parseDocument(text);
  doc.delete('name');
  const dir = tmpdir(); // relative paths resolve against it; they are made relative again below
  let out: string;
  try {
    out = execFileSync('docker-compose', ['-f', '-', 'config'], {
      cwd: dir,
      env: { PATH: rawEnv()['PATH'] ?? '/usr/bin:/bin', ...Object.fromEntries(Object.entries(vars).filter(([, v]) => v !== undefined)) },
      input: doc.toString(),
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error('docker-compose is not on PATH; install it (Debian: apt-get install docker-compose)');
    throw new Error((e.stderr ?? e.message).trim().replace(/\s*\n\s*/g, ' '));
  }
  const config = parse(out.replaceAll(`${dir}/`, './').replaceAll(dir, '.')) as ComposeFile;
  cache.set(key, config);
  return config;
}

/** A service's environment as the container gets it (`config` keeps `$$` escaped; unset without a value is ''). */
export function serviceEnv(service: ComposeService): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, (v ?? '').replaceAll('$$', '$')]));
}

/** Container ports of `ports:` and `expose:` entries. */
export function containerPorts(service: ComposeService): number[] {
  // The long syntax's target, else the last `:` field, less the protocol.
  return [...(service.ports ?? []), ...(service.expose ?? [])].map((p) =>
    typeof p === 'object' ? Number(p.target) : Number(/[^:]*$/.exec(String(p).replace(/\/(tcp|udp)$/, ''))![0]),
  );
}

/** Where the service mounts `source` (`./…` for a bind mount, a volume's name), first mount first. */
export function mountedAt(service: ComposeService, source: string): string[] {
  return (service.volumes ?? []).map((v) => v.split(':')).flatMap(([from, to]) => (from === source ? [to!] : []));
}

/** Compose `stop_grace_period` (`30s`, `1m30s`) in seconds; Docker's default of 10 s when unset. */
export function gracePeriodSeconds({ stop_grace_period: v = '10s' }: ComposeService): number {
  const unit: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001, us: 0.000001 };
  return [...v.matchAll(/(\d+(?:\.\d+)?)(h|ms|us|m|s)/g)].reduce((t, m) => t + Number(m[1]) * unit[m[2]!]!, 0);
}
