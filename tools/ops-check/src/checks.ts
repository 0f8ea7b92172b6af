import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { aggregatorEnv, appEnvSchemas, loadConfig, sharedEnvShape, type AppName } from '@tally/config';
import { parse } from 'yaml';
import { z } from 'zod';
import { composeConfig, containerPorts, gracePeriodSeconds, mounts, serviceEnv, type ComposeFile, type ComposeService } from './compose';
import { parseDockerfile, resolveStage, type ResolvedStage, type Stage } from './dockerfile';
import { metricCandidates, metricNamesIn } from './metrics';

/**
 * Drift checks between the deployment files and the code: the Dockerfile, docker-compose.yml, deploy/prometheus.yml,
 * deploy/alerts.yml and the Grafana provisioning against the apps' config schemas (libs/config), the bundles
 * tools/build-apps makes, and the metric names in the sources. Each check returns the problems it found, one line
 * each, naming the file and the thing; an empty list means the files agree.
 */

export const APPS = Object.keys(appEnvSchemas) as AppName[];

/** Variables read by third-party code rather than the config schema, allowed in the Dockerfile's ENV. */
export const THIRD_PARTY_ENV: Readonly<Record<string, string>> = {
  NODE_ENV: 'conventional; nothing in Tally reads it',
};

/** Metrics that come from Prometheus or an exporter, not from Tally's code. */
export const EXTERNAL_METRICS: Readonly<Record<string, string>> = {
  up: 'Prometheus: 1 when the last scrape of the target succeeded',
  redis_up: 'redis_exporter',
  redis_memory_used_bytes: 'redis_exporter',
  redis_memory_max_bytes: 'redis_exporter (0 when maxmemory is not set)',
};

/** Schemas of the tools the compose file runs (their main.ts parse the same shapes). */
const TOOL_ENV = {
  'create-table': z.object({ ...sharedEnvShape }),
  tenants: z.object({ ...sharedEnvShape }),
  dlq: z.object({
    REDIS_URL: sharedEnvShape.REDIS_URL,
    REDIS_CLUSTER_NODES: sharedEnvShape.REDIS_CLUSTER_NODES,
    KEY_PREFIX: sharedEnvShape.KEY_PREFIX,
    QUEUE_SHARDS: sharedEnvShape.QUEUE_SHARDS,
    DEDUPE_WINDOW_SECONDS: aggregatorEnv.shape.DEDUPE_WINDOW_SECONDS,
  }),
} as const;

export interface OpsFiles {
  repoRoot: string;
  dockerfile: string;
  compose: string;
  prometheus: string;
  alerts: string;
  /** deploy/grafana/provisioning/datasources/*.yml, by file name. */
  grafanaDatasources: Record<string, string>;
  /** deploy/grafana/provisioning/dashboards/*.yml, by file name. */
  grafanaProviders: Record<string, string>;
  /** deploy/grafana/dashboards/*.json, by file name. */
  dashboards: Record<string, string>;
  /** tools/build-apps/src/build.ts: which bundles `npm run build:apps` makes. */
  buildApps: string;
  /** Names of the executable scripts in deploy/bin (copied to /usr/local/bin of the tools image). */
  binScripts: string[];
}

const readDir = (dir: string, ext: RegExp): Record<string, string> =>
  existsSync(dir)
    ? Object.fromEntries(
        readdirSync(dir)
          .filter((f) => ext.test(f))
          .map((f) => [f, readFileSync(join(dir, f), 'utf8')]),
      )
    : {};

export function loadOpsFiles(repoRoot: string): OpsFiles {
  const read = (p: string) => readFileSync(join(repoRoot, p), 'utf8');
  const bin = join(repoRoot, 'deploy/bin');
  return {
    repoRoot,
    dockerfile: read('Dockerfile'),
    compose: read('docker-compose.yml'),
    prometheus: read('deploy/prometheus.yml'),
    alerts: read('deploy/alerts.yml'),
    grafanaDatasources: readDir(join(repoRoot, 'deploy/grafana/provisioning/datasources'), /\.ya?ml$/),
    grafanaProviders: readDir(join(repoRoot, 'deploy/grafana/provisioning/dashboards'), /\.ya?ml$/),
    dashboards: readDir(join(repoRoot, 'deploy/grafana/dashboards'), /\.json$/),
    buildApps: read('tools/build-apps/src/build.ts'),
    binScripts: existsSync(bin) ? readdirSync(bin).filter((f) => (statSync(join(bin, f)).mode & 0o111) !== 0) : [],
  };
}

/** The app's HTTP_PORT when its environment does not set one. */
export function defaultPort(app: AppName): number {
  return loadConfig(appEnvSchemas[app], {}).HTTP_PORT;
}

function bundleNames(buildApps: string): Set<string> {
  return new Set([...buildApps.matchAll(/\{\s*name:\s*'([a-z-]+)',\s*entry:/g)].map((m) => m[1]!));
}

function tryConfig(schema: z.ZodObject, env: Record<string, string>): string | undefined {
  try {
    loadConfig(schema, env);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function unknownVariables(schema: z.ZodObject, env: Record<string, string>): string[] {
  return Object.keys(env).filter((k) => !(k in schema.shape));
}

// ---------------------------------------------------------------------------------------------------------------
// Dockerfile

export function checkDockerfile(files: OpsFiles): string[] {
  const problems: string[] = [];
  let stages: Stage[];
  try {
    stages = parseDockerfile(files.dockerfile);
  } catch (err) {
    return [`Dockerfile: ${(err as Error).message}`];
  }
  const bundles = bundleNames(files.buildApps);
  const has = (name: string) => stages.some((s) => s.name === name);

  for (const app of APPS) {
    if (!has(app)) {
      problems.push(`Dockerfile: no target "${app}" (docker build --target ${app})`);
      continue;
    }
    const s = resolveStage(stages, app);
    const port = defaultPort(app);
    const where = `Dockerfile target ${app}`;
    problems.push(...checkRuntimeBasics(s, where));

    // The bundle: dist/<app> from the build stage, made by npm run build:apps.
    const copied = s.copies.some((c) => c.flags['from'] !== undefined && c.sources.some((src) => new RegExp(`/dist/${app}/?$`).test(src)));
    if (!copied) problems.push(`${where}: does not COPY --from=<build stage> its bundle dist/${app}/`);
    if (!bundles.has(app)) problems.push(`${where}: tools/build-apps has no bundle "${app}" (TARGETS in src/build.ts)`);
    const cmd = s.cmd ?? [];
    if (cmd[0] !== 'node' || !cmd.includes('--enable-source-maps') || !cmd.some((a) => a.endsWith('main.mjs'))) {
      problems.push(`${where}: CMD should be ["node", "--enable-source-maps", "main.mjs"]; is ${JSON.stringify(s.cmd)}`);
    }

    if (!s.expose.includes(String(port)))
      problems.push(`${where}: EXPOSE ${s.expose.join(' ') || '(none)'} does not include HTTP_PORT ${port}`);
    if (!s.healthcheck || s.healthcheck === 'NONE') {
      problems.push(`${where}: no HEALTHCHECK`);
    } else {
      const hc = s.healthcheck.cmd;
      const script = hc.join(' ');
      if (hc[0] !== 'node') problems.push(`${where}: HEALTHCHECK should run node (fetch), not ${hc[0]} (the image has no curl)`);
      if (!script.includes('/healthz')) problems.push(`${where}: HEALTHCHECK does not probe /healthz`);
      const portIn = /process\.env\.HTTP_PORT\s*\|\|\s*(\d+)/.exec(script)?.[1] ?? /127\.0\.0\.1:(\d+)\//.exec(script)?.[1];
      const envPort = s.env['HTTP_PORT'] !== undefined ? Number(s.env['HTTP_PORT']) : port;
      if (portIn === undefined) problems.push(`${where}: HEALTHCHECK names no port`);
      else if (Number(portIn) !== envPort) problems.push(`${where}: HEALTHCHECK probes port ${portIn} but HTTP_PORT is ${envPort}`);
    }

    // Every ENV of the image is a variable of the app's schema (and a value it accepts), or a known third-party one.
    const schema = appEnvSchemas[app];
    const appEnv = Object.fromEntries(Object.entries(s.env).filter(([k]) => !(k in THIRD_PARTY_ENV)));
    for (const k of unknownVariables(schema, appEnv))
      problems.push(`${where}: ENV ${k} is not read by ${app} (not in appEnvSchemas.${app})`);
    const bad = tryConfig(schema, appEnv);
    if (bad) problems.push(`${where}: ENV does not parse: ${bad}`);

    if (app === 'query-api') {
      const dir = s.env['DASHBOARD_DIR'];
      const workdir = s.workdir ?? '/';
      const dashboardCopied = s.copies.some(
        (c) =>
          c.sources.some((src) => /apps\/dashboard\/dist\/?$/.test(src)) &&
          dir !== undefined &&
          posix.resolve(workdir, c.dest) === posix.resolve(dir),
      );
      if (!dashboardCopied) problems.push(`${where}: DASHBOARD_DIR (${dir ?? 'unset'}) is not where apps/dashboard/dist is copied`);
    }
  }

  if (!has('tools')) {
    problems.push('Dockerfile: no target "tools" (create-table, dlq, tenants)');
  } else {
    const s = resolveStage(stages, 'tools');
    for (const tool of Object.keys(TOOL_ENV)) {
      if (!s.copies.some((c) => c.sources.some((src) => new RegExp(`/dist/${tool}/?$`).test(src))))
        problems.push(`Dockerfile target tools: does not copy dist/${tool}/`);
      if (!bundles.has(tool)) problems.push(`Dockerfile target tools: tools/build-apps has no bundle "${tool}"`);
      if (!files.binScripts.includes(tool))
        problems.push(`Dockerfile target tools: deploy/bin/${tool} (its command) is missing or not executable`);
    }
    if (!s.copies.some((c) => c.sources.some((src) => /^deploy\/bin\/?$/.test(src))))
      problems.push('Dockerfile target tools: does not copy deploy/bin/ (the tool commands)');
    problems.push(...checkRuntimeBasics(s, 'Dockerfile target tools'));
  }
  return problems;
}

/** Non-root, SIGTERM reaches node, and tini (if used) is installed. */
function checkRuntimeBasics(s: ResolvedStage, where: string): string[] {
  const problems: string[] = [];
  if (!s.user || /^(root|0)(:|$)/.test(s.user)) problems.push(`${where}: runs as ${s.user ?? 'root (no USER)'}; run as a non-root user`);
  if (s.stopSignal !== 'SIGTERM')
    problems.push(`${where}: STOPSIGNAL is ${s.stopSignal ?? 'unset'}, want SIGTERM (the apps shut down gracefully on it)`);
  const init = s.entrypoint?.[0];
  if (init !== undefined) {
    const name = posix.basename(init);
    if (name !== 'tini' && name !== 'dumb-init')
      problems.push(`${where}: ENTRYPOINT ${init} is not an init (tini/dumb-init) that forwards SIGTERM`);
    else if (!s.runs.some((r) => r.includes(name))) problems.push(`${where}: ENTRYPOINT ${init} but no RUN installs ${name}`);
  } else if (s.cmd && s.cmd[0] === '/bin/sh') {
    problems.push(`${where}: shell-form CMD: sh would be PID 1 and swallow SIGTERM; use the exec form`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// docker-compose.yml

export function checkCompose(files: OpsFiles, vars: Record<string, string | undefined> = {}): string[] {
  const problems: string[] = [];
  let compose: ComposeFile;
  try {
    compose = composeConfig(files.compose, vars);
  } catch (err) {
    return [`docker-compose.yml: ${(err as Error).message}`];
  }
  const services = compose.services ?? {};
  let stages: Stage[] = [];
  try {
    stages = parseDockerfile(files.dockerfile);
  } catch {
    // reported by checkDockerfile
  }

  for (const app of APPS) {
    const svc = services[app];
    const where = `docker-compose.yml service ${app}`;
    if (!svc) {
      problems.push(`docker-compose.yml: no service "${app}"`);
      continue;
    }
    const build = svc.build;
    if (build?.target !== app) problems.push(`${where}: build.target is ${build?.target ?? 'unset'}, want ${app} (the Dockerfile target)`);
    if (build && (build.context ?? '.') !== '.') problems.push(`${where}: build.context is ${build.context}, want . (the repository root)`);

    const schema = appEnvSchemas[app];
    const env = serviceEnv(svc);
    for (const k of unknownVariables(schema, env))
      problems.push(`${where}: environment ${k} is not read by ${app} (not in appEnvSchemas.${app})`);
    const bad = tryConfig(schema, env);
    if (bad) problems.push(`${where}: environment does not parse: ${bad}`);
    problems.push(...checkServiceUrls(where, env, services));

    const port = env['HTTP_PORT'] ? Number(env['HTTP_PORT']) : defaultPort(app);
    const ports = containerPorts(svc);
    if (ports.length === 0) problems.push(`${where}: neither ports nor expose names HTTP_PORT ${port}`);
    for (const p of ports) if (p !== port) problems.push(`${where}: container port ${p} but the app listens on HTTP_PORT ${port}`);

    if (svc.healthcheck && !svc.healthcheck.disable) {
      const test = Array.isArray(svc.healthcheck.test) ? svc.healthcheck.test.join(' ') : (svc.healthcheck.test ?? '');
      if (!test.includes('/healthz')) problems.push(`${where}: healthcheck does not probe /healthz`);
      const hcPort = /process\.env\.HTTP_PORT\s*\|\|\s*(\d+)/.exec(test)?.[1] ?? /:(\d+)\/healthz/.exec(test)?.[1];
      if (hcPort !== undefined && Number(hcPort) !== port)
        problems.push(`${where}: healthcheck probes port ${hcPort} but HTTP_PORT is ${port}`);
    } else if (svc.healthcheck?.disable) {
      problems.push(`${where}: healthcheck disabled; dependents and restarts rely on /healthz`);
    } else if (stages.length > 0 && stages.some((s) => s.name === app)) {
      // No compose healthcheck: the image's HEALTHCHECK applies; it must follow HTTP_PORT when compose sets it.
      const hc = resolveStage(stages, app).healthcheck;
      if (env['HTTP_PORT'] && hc && hc !== 'NONE' && !hc.cmd.join(' ').includes('process.env.HTTP_PORT')) {
        problems.push(`${where}: sets HTTP_PORT ${env['HTTP_PORT']} but the image's HEALTHCHECK probes a fixed port`);
      }
    }

    const deps = Object.fromEntries(Object.entries(svc.depends_on ?? {}).map(([name, d]) => [name, d.condition]));
    if (deps['redis'] !== 'service_healthy') problems.push(`${where}: depends_on redis should be condition: service_healthy`);
    if (deps['create-table'] !== 'service_completed_successfully') {
      problems.push(`${where}: depends_on create-table should be condition: service_completed_successfully`);
    }
    const grace = gracePeriodSeconds(svc);
    if (grace === undefined || grace <= 10) {
      problems.push(
        `${where}: stop_grace_period ${svc.stop_grace_period ?? 'unset (10s)'} leaves no time for the graceful shutdown (steps of up to 10-20 s)`,
      );
    }
  }

  problems.push(...checkRedisService(services['redis']));

  // Tool services: the tools image and its commands, environments their schemas accept.
  for (const [name, svc] of Object.entries(services)) {
    if (svc.build?.target !== 'tools') continue;
    const where = `docker-compose.yml service ${name}`;
    // The command is the first word after the init: a script of deploy/bin (in /usr/local/bin of the image).
    const words = [...(svc.entrypoint ?? []), ...(svc.command ?? [])].filter((w) => w !== '/usr/bin/tini' && w !== '--');
    const script = words[0] ?? '(none)';
    if (!files.binScripts.includes(script)) problems.push(`${where}: runs "${script}", which is not a script in deploy/bin`);
    const tool = (Object.keys(TOOL_ENV) as Array<keyof typeof TOOL_ENV>).find((t) => script === t || script === `${t}-when-ready`);
    if (!tool) {
      problems.push(`${where}: runs none of the tools (${Object.keys(TOOL_ENV).join(', ')})`);
      continue;
    }
    const env = serviceEnv(svc);
    for (const k of unknownVariables(TOOL_ENV[tool], env)) problems.push(`${where}: environment ${k} is not read by ${tool}`);
    const bad = tryConfig(TOOL_ENV[tool], env);
    if (bad) problems.push(`${where}: environment does not parse: ${bad}`);
    problems.push(...checkServiceUrls(where, env, services));
  }
  if (!services['create-table']) problems.push('docker-compose.yml: no one-shot service "create-table"');

  // The events replay guard of dlq must use the aggregator's dedupe window.
  const windows = new Set(
    Object.entries(services)
      .filter(([name]) => name === 'bucket-aggregator' || name === 'dlq')
      .map(([, svc]) => serviceEnv(svc)['DEDUPE_WINDOW_SECONDS'] ?? String(aggregatorEnv.shape.DEDUPE_WINDOW_SECONDS.parse(undefined))),
  );
  if (windows.size > 1)
    problems.push(`docker-compose.yml: bucket-aggregator and dlq disagree on DEDUPE_WINDOW_SECONDS (${[...windows].join(' vs ')})`);
  return problems;
}

/** Redis and DynamoDB URLs in an environment must name services of this compose file. */
function checkServiceUrls(where: string, env: Record<string, string>, services: Record<string, ComposeService>): string[] {
  const problems: string[] = [];
  for (const key of ['REDIS_URL', 'DYNAMODB_ENDPOINT']) {
    const value = env[key];
    if (!value) continue;
    let host: string;
    try {
      host = new URL(value).hostname;
    } catch {
      continue; // the schema check names it
    }
    if (!(host in services)) problems.push(`${where}: ${key} host "${host}" is not a service of docker-compose.yml`);
  }
  return problems;
}

function checkRedisService(svc: ComposeService | undefined): string[] {
  if (!svc) return ['docker-compose.yml: no service "redis"'];
  const problems: string[] = [];
  const args = svc.command ?? [];
  const setting = (name: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const want: Record<string, string> = { appendonly: 'yes', appendfsync: 'everysec', 'maxmemory-policy': 'noeviction' };
  for (const [k, v] of Object.entries(want)) {
    if (setting(k) !== v)
      problems.push(`docker-compose.yml service redis: --${k} is ${setting(k) ?? 'unset'}, want ${v} (BullMQ: AOF and no eviction)`);
  }
  if (!mounts(svc).some((m) => m.target === '/data'))
    problems.push('docker-compose.yml service redis: no volume at /data (the AOF would die with the container)');
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// deploy/prometheus.yml

interface PromConfig {
  rule_files?: string[];
  scrape_configs?: Array<{
    job_name: string;
    metrics_path?: string;
    static_configs?: Array<{ targets: string[] }>;
    dns_sd_configs?: Array<{ names: string[]; type?: string; port?: number }>;
  }>;
}

export function checkPrometheus(files: OpsFiles, vars: Record<string, string | undefined> = {}): string[] {
  const problems: string[] = [];
  const prom = parse(files.prometheus) as PromConfig;
  const compose = composeConfig(files.compose, vars);
  const services = compose.services ?? {};
  const jobs = prom.scrape_configs ?? [];

  for (const app of APPS) {
    const svc = services[app];
    const env = svc ? serviceEnv(svc) : {};
    const port = env['HTTP_PORT'] ? Number(env['HTTP_PORT']) : defaultPort(app);
    const job = jobs.find((j) => j.job_name === app);
    if (!job) {
      problems.push(`deploy/prometheus.yml: no scrape job "${app}"`);
      continue;
    }
    if (job.metrics_path !== undefined && job.metrics_path !== '/metrics')
      problems.push(`deploy/prometheus.yml job ${app}: metrics_path ${job.metrics_path}, the apps serve /metrics`);
    const statics = (job.static_configs ?? []).flatMap((c) => c.targets);
    const dns = job.dns_sd_configs ?? [];
    const ok = statics.includes(`${app}:${port}`) || dns.some((d) => d.names.includes(app) && (d.type ?? 'SRV') === 'A' && d.port === port);
    if (!ok) problems.push(`deploy/prometheus.yml job ${app}: does not scrape ${app}:${port} (its service and HTTP_PORT)`);
    for (const t of statics) {
      const [host, p] = t.split(':');
      if (host === app && Number(p) !== port) problems.push(`deploy/prometheus.yml job ${app}: target ${t} but HTTP_PORT is ${port}`);
    }
    for (const d of dns)
      if (d.names.includes(app) && d.port !== port)
        problems.push(`deploy/prometheus.yml job ${app}: dns_sd port ${d.port} but HTTP_PORT is ${port}`);
  }
  // Other static targets must be services of the compose file exposing that port.
  for (const job of jobs) {
    for (const t of (job.static_configs ?? []).flatMap((c) => c.targets)) {
      const [host, p] = t.split(':');
      if (host === 'localhost' || host === '127.0.0.1' || (APPS as string[]).includes(host!)) continue;
      const svc = services[host!];
      if (!svc) problems.push(`deploy/prometheus.yml job ${job.job_name}: target ${t} is not a compose service`);
      else if (!containerPorts(svc).includes(Number(p))) {
        problems.push(`deploy/prometheus.yml job ${job.job_name}: service ${host} does not expose port ${p}`);
      }
    }
  }

  // The compose file mounts this config and the alert rules where Prometheus reads them.
  const promSvc = services['prometheus'];
  if (!promSvc) return [...problems, 'docker-compose.yml: no service "prometheus"'];
  const promMounts = mounts(promSvc);
  const configPath =
    (promSvc.command ?? []).map((a) => /^--config\.file=(.*)$/.exec(a)?.[1]).find(Boolean) ?? '/etc/prometheus/prometheus.yml';
  if (!promMounts.some((m) => m.source === './deploy/prometheus.yml' && m.target === configPath)) {
    problems.push(`docker-compose.yml service prometheus: ./deploy/prometheus.yml is not mounted at ${configPath}`);
  }
  const alertsAt = promMounts.find((m) => m.source === './deploy/alerts.yml')?.target;
  if (!alertsAt) problems.push('docker-compose.yml service prometheus: ./deploy/alerts.yml is not mounted');
  else if (!(prom.rule_files ?? []).includes(alertsAt))
    problems.push(`deploy/prometheus.yml: rule_files does not load ${alertsAt} (where compose mounts deploy/alerts.yml)`);
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// Metric names in alerts and dashboards

export interface KnownMetrics {
  /** Metric names defined in the code (string literals) and prom-client's default metrics as the apps register them. */
  names: ReadonlySet<string>;
}

function unknownMetrics(expr: string, known: KnownMetrics): string[] {
  return metricNamesIn(expr).filter((name) => !(name in EXTERNAL_METRICS) && !metricCandidates(name).some((c) => known.names.has(c)));
}

interface AlertRules {
  groups?: Array<{
    name: string;
    rules?: Array<{
      alert?: string;
      record?: string;
      expr?: string;
      for?: string;
      labels?: Record<string, string>;
      annotations?: Record<string, string>;
    }>;
  }>;
}

export function checkAlerts(files: OpsFiles, known: KnownMetrics): string[] {
  const problems: string[] = [];
  const rules = parse(files.alerts) as AlertRules;
  if (!rules?.groups?.length) return ['deploy/alerts.yml: no rule groups'];
  for (const g of rules.groups) {
    for (const r of g.rules ?? []) {
      const name = r.alert ?? r.record ?? '(unnamed)';
      const where = `deploy/alerts.yml ${g.name}/${name}`;
      if (!r.expr) {
        problems.push(`${where}: no expr`);
        continue;
      }
      for (const m of unknownMetrics(r.expr, known)) problems.push(`${where}: metric ${m} is not defined anywhere in the code`);
      if (r.alert) {
        if (!['warning', 'critical'].includes(r.labels?.['severity'] ?? ''))
          problems.push(`${where}: labels.severity should be warning or critical`);
        if (!r.annotations?.['summary']) problems.push(`${where}: no annotations.summary`);
      }
    }
  }
  return problems;
}

interface Panel {
  type: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: Array<{ expr?: string; datasource?: { uid?: string } }>;
  panels?: Panel[];
}

export function checkGrafana(files: OpsFiles, known: KnownMetrics): string[] {
  const problems: string[] = [];
  const compose = composeConfig(files.compose);
  const grafana = compose.services?.['grafana'];
  if (!grafana) return ['docker-compose.yml: no service "grafana"'];
  const gMounts = mounts(grafana);

  if (!gMounts.some((m) => m.source === './deploy/grafana/provisioning' && m.target === '/etc/grafana/provisioning')) {
    problems.push('docker-compose.yml service grafana: ./deploy/grafana/provisioning is not mounted at /etc/grafana/provisioning');
  }
  const uids = new Set<string>();
  for (const [file, text] of Object.entries(files.grafanaDatasources)) {
    const ds = parse(text) as { datasources?: Array<{ uid?: string; type?: string; url?: string }> };
    for (const d of ds.datasources ?? []) {
      if (d.uid) uids.add(d.uid);
      if (d.type === 'prometheus' && d.url) {
        const host = new URL(d.url).hostname;
        if (!compose.services?.[host])
          problems.push(`deploy/grafana/provisioning/datasources/${file}: url host ${host} is not a compose service`);
      }
    }
  }
  if (uids.size === 0) problems.push('deploy/grafana/provisioning/datasources: no datasource with a uid');

  const dashboardsMount = gMounts.find((m) => m.source === './deploy/grafana/dashboards')?.target;
  if (!dashboardsMount) problems.push('docker-compose.yml service grafana: ./deploy/grafana/dashboards is not mounted');
  const providerPaths = Object.values(files.grafanaProviders).flatMap((t) =>
    ((parse(t) as { providers?: Array<{ options?: { path?: string } }> }).providers ?? []).map((p) => p.options?.path),
  );
  if (dashboardsMount && !providerPaths.includes(dashboardsMount)) {
    problems.push(`deploy/grafana/provisioning/dashboards: no provider reads ${dashboardsMount} (where compose mounts the dashboards)`);
  }
  const home = serviceEnv(grafana)['GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH'];
  if (home && dashboardsMount && !(home.startsWith(`${dashboardsMount}/`) && posix.basename(home) in files.dashboards)) {
    problems.push(
      `docker-compose.yml service grafana: GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH ${home} is not a dashboard in deploy/grafana/dashboards`,
    );
  }

  if (Object.keys(files.dashboards).length === 0) problems.push('deploy/grafana/dashboards: no dashboard');
  for (const [file, text] of Object.entries(files.dashboards)) {
    let dash: { uid?: string; panels?: Panel[] };
    try {
      dash = JSON.parse(text);
    } catch (err) {
      problems.push(`deploy/grafana/dashboards/${file}: not JSON: ${(err as Error).message}`);
      continue;
    }
    if (!dash.uid) problems.push(`deploy/grafana/dashboards/${file}: no uid (links to it would change on every load)`);
    const panels = (dash.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
    if (panels.length === 0) problems.push(`deploy/grafana/dashboards/${file}: no panels`);
    for (const p of panels) {
      const where = `deploy/grafana/dashboards/${file} panel "${p.title ?? '?'}"`;
      if (!p.targets?.length) problems.push(`${where}: no queries`);
      for (const t of p.targets ?? []) {
        const uid = t.datasource?.uid ?? p.datasource?.uid;
        if (!uid || !uids.has(uid))
          problems.push(`${where}: datasource uid ${uid ?? '(none)'} is not a provisioned datasource (${[...uids].join(', ')})`);
        if (!t.expr) {
          problems.push(`${where}: a query without expr`);
          continue;
        }
        for (const m of unknownMetrics(t.expr, known)) problems.push(`${where}: metric ${m} is not defined anywhere in the code`);
      }
    }
  }
  return problems;
}
