import { parse } from 'yaml';

/** The parts of a compose service the checks read. */
export interface ComposeService {
  image?: string;
  build?: { context?: string; target?: string } | string;
  command?: string[] | string;
  entrypoint?: string[] | string;
  environment?: Record<string, string | number | boolean | null> | string[];
  ports?: Array<string | { target: number; published?: string | number }>;
  expose?: Array<string | number>;
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string[] | string; disable?: boolean };
  volumes?: Array<string | { source?: string; target: string }>;
  stop_grace_period?: string;
  profiles?: string[];
}

export interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** Parses docker-compose.yml with YAML merge keys (`<<: *anchor`), as Compose does. */
export function parseCompose(text: string): ComposeFile {
  return parse(text, { merge: true }) as ComposeFile;
}

/**
 * Compose's variable interpolation: `${VAR}`, `${VAR:-default}` (default when unset or empty), `${VAR-default}`
 * (default when unset), `$VAR`, and `$$` for a literal `$`. `vars` is the environment compose would see.
 */
export function interpolate(value: string, vars: Record<string, string | undefined> = {}): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (all, braced, colon, dflt, bare) => {
    if (all === '$$') return '$';
    const name = (braced ?? bare) as string;
    const v = vars[name];
    if (dflt === undefined) return v ?? '';
    if (colon === ':') return v === undefined || v === '' ? dflt : v;
    return v === undefined ? dflt : v;
  });
}

/** A service's environment as strings, interpolated. List form (`KEY=value`) and map form both. */
export function serviceEnv(service: ComposeService, vars: Record<string, string | undefined> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    for (const entry of env) {
      const eq = entry.indexOf('=');
      if (eq > 0) out[entry.slice(0, eq)] = interpolate(entry.slice(eq + 1), vars);
    }
  } else {
    for (const [k, v] of Object.entries(env)) out[k] = v === null ? '' : interpolate(String(v), vars);
  }
  return out;
}

/** Container ports of `ports:` entries (`"127.0.0.1:${P:-7401}:7401"`, `"7401"`, `{target: 7401}`). */
export function containerPorts(service: ComposeService, vars: Record<string, string | undefined> = {}): number[] {
  return (service.ports ?? []).map((p) => {
    if (typeof p === 'object') return Number(p.target);
    const spec = interpolate(String(p), vars).replace(/\/(tcp|udp)$/, '');
    return Number(spec.split(':').pop());
  });
}

export function exposedPorts(service: ComposeService): number[] {
  return (service.expose ?? []).map((p) => Number(String(p).replace(/\/(tcp|udp)$/, '')));
}

export function dependsOn(service: ComposeService): Record<string, string> {
  const d = service.depends_on ?? {};
  if (Array.isArray(d)) return Object.fromEntries(d.map((name) => [name, 'service_started']));
  return Object.fromEntries(Object.entries(d).map(([name, v]) => [name, v?.condition ?? 'service_started']));
}

export function buildOf(service: ComposeService): { context?: string; target?: string } | undefined {
  if (service.build === undefined) return undefined;
  return typeof service.build === 'string' ? { context: service.build } : service.build;
}

/** Bind mounts as `{ source, target }` (named volumes have a source without `./`). */
export function mounts(service: ComposeService): Array<{ source: string; target: string }> {
  return (service.volumes ?? []).map((v) => {
    if (typeof v === 'object') return { source: v.source ?? '', target: v.target };
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
