import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rawEnv } from '@tally/config';
import { parse, parseDocument } from 'yaml';

/** A compose service as `docker-compose config` prints it: merged, interpolated, long syntax where it has one. */
export interface ComposeService {
  image?: string;
  build?: { context?: string; target?: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string | null>;
  /** `[host_ip:]published:target/proto` */
  ports?: string[];
  expose?: string[];
  depends_on?: Record<string, { condition?: string }>;
  healthcheck?: { test?: string[]; disable?: boolean };
  /** `source:target[:mode]`; bind sources relative to the compose file's directory (`./…`). */
  volumes?: string[];
  stop_grace_period?: string;
  profiles?: string[];
}

export interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const cache = new Map<string, ComposeFile>();

/**
 * The compose file as Compose itself reads it: `docker-compose config` (Debian's docker-compose package, no
 * engine needed) validates it, applies the `<<:` merges and interpolates `${VAR:-default}` with `vars` as the
 * host environment. Throws with Compose's message when the file is invalid.
 */
export function composeConfig(text: string, vars: Record<string, string | undefined> = {}): ComposeFile {
  const key = JSON.stringify([text, vars]);
  const cached = cache.get(key);
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'tally-compose-'));
  try {
    // Compose 1.x predates the top-level `name`; the project name is given with -p instead.
    const doc = parseDocument(text);
    const project = String(doc.get('name') ?? 'tally');
    doc.delete('name');
    writeFileSync(join(dir, 'docker-compose.yml'), doc.toString());
    const env: Record<string, string> = { PATH: rawEnv()['PATH'] ?? '/usr/bin:/bin' };
    for (const [k, v] of Object.entries(vars)) if (v !== undefined) env[k] = v;
    let out: string;
    try {
      out = execFileSync('docker-compose', ['-p', project, '-f', join(dir, 'docker-compose.yml'), 'config'], {
        env,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') throw new Error('docker-compose is not on PATH; install it (Debian: apt-get install docker-compose)');
      const why = (e.stderr ?? e.message).split(join(dir, 'docker-compose.yml')).join('docker-compose.yml');
      throw new Error(
        why
          .trim()
          .split(/\s*\n\s*/)
          .filter(Boolean)
          .join(' '),
      );
    }
    // Paths come back absolute; make them relative to the compose file again, as written.
    const config = parse(out.split(`${dir}/`).join('./').split(dir).join('.')) as ComposeFile;
    cache.set(key, config);
    return config;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A service's environment as the container gets it (`config` keeps `$$` escaped; unset without a value is ''). */
export function serviceEnv(service: ComposeService): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, (v ?? '').replaceAll('$$', '$')]));
}

/** Container ports of `ports:` and `expose:` entries. */
export function containerPorts(service: ComposeService): number[] {
  const port = (p: string) =>
    Number(
      p
        .replace(/\/(tcp|udp)$/, '')
        .split(':')
        .pop(),
    );
  return [...(service.ports ?? []), ...(service.expose ?? [])].map(port);
}

/** Mounts as `{ source, target }` (named volumes have a source without `./`). */
export function mounts(service: ComposeService): Array<{ source: string; target: string }> {
  return (service.volumes ?? []).map((v) => {
    const [source, target] = v.split(':');
    return { source: source!, target: target! };
  });
}

/** Compose `stop_grace_period` (`30s`, `1m30s`) in seconds; undefined when unset (Docker's default is 10 s). */
export function gracePeriodSeconds(service: ComposeService): number | undefined {
  const v = service.stop_grace_period;
  if (v === undefined) return undefined;
  let total = 0;
  for (const m of v.matchAll(/(\d+(?:\.\d+)?)(h|m|s|ms|us)/g)) {
    total += Number(m[1]) * ({ h: 3600, m: 60, s: 1, ms: 0.001, us: 0.000001 } as Record<string, number>)[m[2]!]!;
  }
  return total;
}
