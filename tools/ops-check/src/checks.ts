import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { TARGETS } from '@tally/build-apps';
import { appEnvSchemas, loadConfig, toolEnvSchemas, type AppName } from '@tally/config';
import { parse } from 'yaml';
import type { z } from 'zod';
import { composeConfig, containerPorts, gracePeriodSeconds, mountedAt, serviceEnv, type ComposeService } from './compose';
import { parseDockerfile, resolveStage, type ResolvedStage } from './dockerfile';
import { metricCandidates, metricNamesIn } from './metrics';

// Drift checks of the deployment files against the apps' and tools' config schemas (libs/config), the bundles
// tools/build-apps makes, and the metric names in the sources. Each check returns the problems it found, one line
// each naming the file and the thing; an empty list means the files agree.

export const APPS = Object.keys(appEnvSchemas) as AppName[];
const TOOLS = Object.keys(toolEnvSchemas) as Array<keyof typeof toolEnvSchemas>;
const BUNDLES = new Set(TARGETS.map((t) => t.name));

/** Variables read by third-party code rather than the config schema, allowed in the Dockerfile's ENV. */
const THIRD_PARTY_ENV: Readonly<Record<string, string>> = {
  NODE_ENV: 'conventional; nothing in Tally reads it',
};

/** Metrics that come from Prometheus or an exporter, not from Tally's code. */
const EXTERNAL_METRICS: Readonly<Record<string, string>> = {
  up: 'Prometheus: 1 when the last scrape of the target succeeded',
  redis_up: 'redis_exporter',
  redis_memory_used_bytes: 'redis_exporter',
  redis_memory_max_bytes: 'redis_exporter (0 when maxmemory is not set)',
  redis_aof_delayed_fsync: 'redis_exporter: INFO persistence aof_delayed_fsync',
  redis_cpu_user_seconds_total: 'redis_exporter: INFO cpu used_cpu_user',
  redis_cpu_sys_seconds_total: 'redis_exporter: INFO cpu used_cpu_sys',
};

/** The deployment files, as text (the Grafana ones and the bin scripts by file name; bin: the executable ones only). */
export function loadOpsFiles(repoRoot: string) {
  const read = (p: string) => readFileSync(join(repoRoot, p), 'utf8');
  const files = (dir: string, ext: RegExp) =>
    existsSync(join(repoRoot, dir)) ? readdirSync(join(repoRoot, dir)).filter((f) => ext.test(f)) : [];
  const readDir = (dir: string, ext: RegExp) => Object.fromEntries(files(dir, ext).map((f) => [f, read(`${dir}/${f}`)]));
  return {
    dockerfile: read('Dockerfile'),
    compose: read('docker-compose.yml'),
    prometheus: read('deploy/prometheus.yml'),
    alerts: read('deploy/alerts.yml'),
    grafanaDatasources: readDir('deploy/grafana/provisioning/datasources', /\.ya?ml$/),
    grafanaProviders: readDir('deploy/grafana/provisioning/dashboards', /\.ya?ml$/),
    dashboards: readDir('deploy/grafana/dashboards', /\.json$/),
    binScripts: files('deploy/bin', /./).filter((f) => (statSync(join(repoRoot, 'deploy/bin', f)).mode & 0o111) !== 0),
  };
}

export type OpsFiles = ReturnType<typeof loadOpsFiles>;

/** The app's HTTP_PORT when its environment does not set one. */
export function defaultPort(app: AppName): number {
  return loadConfig(appEnvSchemas[app], {}).HTTP_PORT;
}

const appPort = (app: AppName, env: Record<string, string>) => (env['HTTP_PORT'] ? Number(env['HTTP_PORT']) : defaultPort(app));

/** Variables the schema does not read (`what` names the setting: ENV, environment), and whether the values parse. */
function* checkEnv(where: string, what: string, schema: z.ZodObject, env: Record<string, string>, reader: string) {
  for (const k of Object.keys(env)) if (!(k in schema.shape)) yield `${where}: ${what} ${k} is not read by ${reader}`;
  const [, error] = attempt(() => loadConfig(schema, env));
  if (error !== undefined) yield `${where}: ${what} does not parse: ${error}`;
}

/** A check written as a generator of problems (`return yield p`: p is the last one), as a function returning them as a list. */
const listed =
  <A extends unknown[]>(check: (...args: A) => Iterable<string>) =>
  (...args: A): string[] => [...check(...args)];

/** What `fn` returns, or the message of the error it throws. */
function attempt<T>(fn: () => T): [T, undefined] | [undefined, string] {
  try {
    return [fn(), undefined];
  } catch (err) {
    return [undefined, (err as Error).message];
  }
}

/** A healthcheck command (`what`) probes /healthz on `port`; returns the port it names (`HTTP_PORT||<n>`, `:<n>/`), if any. */
function* checkProbe(where: string, what: string, cmd: string, port: number) {
  const probed = [/process\.env\.HTTP_PORT\s*\|\|\s*(\d+)/, /:(\d+)\/healthz/, /127\.0\.0\.1:(\d+)\//]
    .map((re) => re.exec(cmd)?.[1])
    .find(Boolean);
  if (!cmd.includes('/healthz')) yield `${where}: ${what} does not probe /healthz`;
  if (probed !== undefined && Number(probed) !== port) yield `${where}: ${what} probes port ${probed} but HTTP_PORT is ${port}`;
  return probed;
}

// ---- Dockerfile -----------------------------------------------------------------------------------------------
export const checkDockerfile = listed(function* (files: OpsFiles) {
  const [stages, error] = attempt(() => parseDockerfile(files.dockerfile));
  if (error !== undefined) return yield `Dockerfile: ${error}`;

  for (const app of APPS) {
    if (!stages.some((s) => s.name === app)) {
      yield `Dockerfile: no target "${app}" (docker build --target ${app})`;
      continue;
    }
    const s = resolveStage(stages, app);
    const port = defaultPort(app);
    const where = `Dockerfile target ${app}`;
    yield* checkRuntimeBasics(s, where);

    // The bundle: dist/<app> from the build stage, made by npm run build:apps.
    if (!copies(s, new RegExp(`/dist/${app}/?$`), true).length)
      yield `${where}: does not COPY --from=<build stage> its bundle dist/${app}/`;
    if (!BUNDLES.has(app)) yield `${where}: tools/build-apps has no bundle "${app}" (TARGETS in src/build.ts)`;
    const cmd = s.cmd ?? [];
    if (cmd[0] !== 'node' || !cmd.includes('--enable-source-maps') || !cmd.some((a) => a.endsWith('main.mjs')))
      yield `${where}: CMD should be ["node", "--enable-source-maps", "main.mjs"]; is ${JSON.stringify(s.cmd)}`;

    if (!s.expose.includes(String(port))) yield `${where}: EXPOSE ${s.expose.join(' ') || '(none)'} does not include HTTP_PORT ${port}`;
    if (!s.healthcheck || s.healthcheck === 'NONE') yield `${where}: no HEALTHCHECK`;
    else {
      const hc = s.healthcheck.cmd;
      if (hc[0] !== 'node') yield `${where}: HEALTHCHECK should run node (fetch), not ${hc[0]} (the image has no curl)`;
      if ((yield* checkProbe(where, 'HEALTHCHECK', hc.join(' '), appPort(app, s.env))) === undefined)
        yield `${where}: HEALTHCHECK names no port`;
    }

    // Every ENV of the image is a variable of the app's schema (and a value it accepts), or a known third-party one.
    const env = Object.fromEntries(Object.entries(s.env).filter(([k]) => !(k in THIRD_PARTY_ENV)));
    yield* checkEnv(where, 'ENV', appEnvSchemas[app], env, `${app} (not in appEnvSchemas.${app})`);

    if (app === 'query-api') {
      const dir = s.env['DASHBOARD_DIR'];
      const at = (c: ResolvedStage['copies'][number]) =>
        dir !== undefined && posix.resolve(s.workdir ?? '/', c.dest) === posix.resolve(dir);
      if (!copies(s, /apps\/dashboard\/dist\/?$/).some(at))
        yield `${where}: DASHBOARD_DIR (${dir ?? 'unset'}) is not where apps/dashboard/dist is copied`;
    }
  }

  if (!stages.some((s) => s.name === 'tools')) return yield 'Dockerfile: no target "tools" (create-table, dlq, tenants)';
  const s = resolveStage(stages, 'tools');
  for (const tool of TOOLS) {
    if (!copies(s, new RegExp(`/dist/${tool}/?$`)).length) yield `Dockerfile target tools: does not copy dist/${tool}/`;
    if (!BUNDLES.has(tool)) yield `Dockerfile target tools: tools/build-apps has no bundle "${tool}"`;
    if (!files.binScripts.includes(tool)) yield `Dockerfile target tools: deploy/bin/${tool} (its command) is missing or not executable`;
  }
  if (!copies(s, /^deploy\/bin\/?$/).length) yield 'Dockerfile target tools: does not copy deploy/bin/ (the tool commands)';
  yield* checkRuntimeBasics(s, 'Dockerfile target tools');
});

/** The COPY instructions of `s` with a source that matches `source` (`fromStage`: only those copying from another stage). */
const copies = (s: ResolvedStage, source: RegExp, fromStage = false) =>
  s.copies.filter((c) => (!fromStage || c.from !== undefined) && c.sources.some((src) => source.test(src)));

/** Non-root, SIGTERM reaches node, and tini (if used) is installed. */
function* checkRuntimeBasics(s: ResolvedStage, where: string) {
  if (!s.user || /^(root|0)(:|$)/.test(s.user)) yield `${where}: runs as ${s.user ?? 'root (no USER)'}; run as a non-root user`;
  if (s.stopSignal !== 'SIGTERM')
    yield `${where}: STOPSIGNAL is ${s.stopSignal ?? 'unset'}, want SIGTERM (the apps shut down gracefully on it)`;
  const init = s.entrypoint?.[0];
  const name = init && posix.basename(init);
  if (init && name !== 'tini' && name !== 'dumb-init')
    yield `${where}: ENTRYPOINT ${init} is not an init (tini/dumb-init) that forwards SIGTERM`;
  else if (name && !s.runs.some((r) => r.includes(name))) yield `${where}: ENTRYPOINT ${init} but no RUN installs ${name}`;
  else if (!init && s.cmd?.[0] === '/bin/sh') yield `${where}: shell-form CMD: sh would be PID 1 and swallow SIGTERM; use the exec form`;
}

// ---- docker-compose.yml ---------------------------------------------------------------------------------------
export const checkCompose = listed(function* (files: OpsFiles, vars: Record<string, string | undefined> = {}) {
  const [compose, error] = attempt(() => composeConfig(files.compose, vars));
  if (error !== undefined) return yield `docker-compose.yml: ${error}`;
  const services = compose.services ?? {};
  const stages = attempt(() => parseDockerfile(files.dockerfile))[0] ?? []; // when it does not parse, checkDockerfile says so
  /** Each service whose program reads DEDUPE_WINDOW_SECONDS, with the value its environment sets (undefined: none). */
  const windows = new Map<string, string | undefined>();
  const noteWindow = (name: string, schema: z.ZodObject, env: Record<string, string>) => {
    if ('DEDUPE_WINDOW_SECONDS' in schema.shape) windows.set(name, env['DEDUPE_WINDOW_SECONDS']);
  };

  for (const app of APPS) {
    const svc = services[app];
    const where = `docker-compose.yml service ${app}`;
    if (!svc) {
      yield `docker-compose.yml: no service "${app}"`;
      continue;
    }
    const { build } = svc;
    if (build?.target !== app) yield `${where}: build.target is ${build?.target ?? 'unset'}, want ${app} (the Dockerfile target)`;
    if (build && (build.context ?? '.') !== '.') yield `${where}: build.context is ${build.context}, want . (the repository root)`;

    const env = serviceEnv(svc);
    yield* checkServiceEnv(where, appEnvSchemas[app], env, `${app} (not in appEnvSchemas.${app})`, services);
    noteWindow(app, appEnvSchemas[app], env);

    const port = appPort(app, env);
    const ports = containerPorts(svc);
    if (ports.length === 0) yield `${where}: neither ports nor expose names HTTP_PORT ${port}`;
    for (const p of ports) if (p !== port) yield `${where}: container port ${p} but the app listens on HTTP_PORT ${port}`;

    if (svc.healthcheck?.disable) yield `${where}: healthcheck disabled; dependents and restarts rely on /healthz`;
    else if (svc.healthcheck) yield* checkProbe(where, 'healthcheck', [svc.healthcheck.test ?? []].flat().join(' '), port);
    else if (env['HTTP_PORT'] && stages.some((s) => s.name === app)) {
      // No compose healthcheck: the image's HEALTHCHECK applies; it must follow HTTP_PORT when compose sets it.
      const hc = resolveStage(stages, app).healthcheck;
      if (hc && hc !== 'NONE' && !hc.cmd.join(' ').includes('process.env.HTTP_PORT'))
        yield `${where}: sets HTTP_PORT ${env['HTTP_PORT']} but the image's HEALTHCHECK probes a fixed port`;
    }

    for (const [dep, condition] of Object.entries({ redis: 'service_healthy', 'create-table': 'service_completed_successfully' }))
      if (svc.depends_on?.[dep]?.condition !== condition) yield `${where}: depends_on ${dep} should be condition: ${condition}`;
    if (gracePeriodSeconds(svc) <= 10) {
      const set = svc.stop_grace_period ?? 'unset (10s)';
      yield `${where}: stop_grace_period ${set} leaves no time for the graceful shutdown (steps of up to 10-20 s)`;
    }
  }

  yield* checkRedisService(services['redis']);

  // Tool services: the tools image and its commands, environments their schemas accept.
  for (const [name, svc] of Object.entries(services)) {
    if (svc.build?.target !== 'tools') continue;
    const where = `docker-compose.yml service ${name}`;
    // The command is the first word after the init: a script of deploy/bin (in /usr/local/bin of the image).
    const script = [...(svc.entrypoint ?? []), ...(svc.command ?? [])].filter((w) => w !== '/usr/bin/tini' && w !== '--')[0] ?? '(none)';
    if (!files.binScripts.includes(script)) yield `${where}: runs "${script}", which is not a script in deploy/bin`;
    const tool = TOOLS.find((t) => script === t || script === `${t}-when-ready`);
    if (!tool) yield `${where}: runs none of the tools (${TOOLS.join(', ')})`;
    else {
      yield* checkServiceEnv(where, toolEnvSchemas[tool], serviceEnv(svc), tool, services);
      noteWindow(name, toolEnvSchemas[tool], serviceEnv(svc));
    }
  }

  // One dedupe window for every program that reads it: the aggregator's batch ids, the collector's Idempotency-Key
  // fingerprints, the dlq replay guard, and the tombstones the query API and the tenants tool write (a batch never
  // applied later than the window cannot outlive them). Each sets it, so a changed window reaches them all.
  for (const [name, value] of windows)
    if (value === undefined)
      yield `docker-compose.yml service ${name}: reads DEDUPE_WINDOW_SECONDS but does not set it, so it keeps the default when the others change`;
  const setting = [...windows].filter(([, v]) => v !== undefined);
  if (new Set(setting.map(([, v]) => v)).size > 1)
    yield `docker-compose.yml: the services disagree on DEDUPE_WINDOW_SECONDS (${setting.map(([n, v]) => `${n} ${v}`).join(', ')})`;
});

/** A service's environment: read by its schema, and its Redis and DynamoDB URLs name services of this compose file. */
function* checkServiceEnv(where: string, schema: z.ZodObject, env: Record<string, string>, reader: string, services: object) {
  yield* checkEnv(where, 'environment', schema, env, reader);
  for (const key of ['REDIS_URL', 'DYNAMODB_ENDPOINT']) {
    const host = URL.parse(env[key] ?? '')?.hostname; // an unparsable URL is named by the schema check
    if (host && !(host in services)) yield `${where}: ${key} host "${host}" is not a service of docker-compose.yml`;
  }
}

function* checkRedisService(svc: ComposeService | undefined): Iterable<string> {
  if (!svc) return yield 'docker-compose.yml: no service "redis"';
  const args = svc.command ?? [];
  const wanted = { appendonly: ['yes'], appendfsync: ['everysec', 'always'], 'maxmemory-policy': ['noeviction'] };
  for (const [k, v] of Object.entries(wanted)) {
    const is = args.includes(`--${k}`) ? args[args.indexOf(`--${k}`) + 1] : undefined;
    if (!v.includes(is ?? ''))
      yield `docker-compose.yml service redis: --${k} is ${is ?? 'unset'}, want ${v.join(' or ')} (BullMQ: AOF and no eviction)`;
  }
  if (!(svc.volumes ?? []).some((v) => v.split(':')[1] === '/data'))
    yield 'docker-compose.yml service redis: no volume at /data (the AOF would die with the container)';
}

// ---- deploy/prometheus.yml ------------------------------------------------------------------------------------
type DnsSd = { names: string[]; type?: string; port?: number };
type ScrapeJob = { job_name: string; metrics_path?: string; static_configs?: Array<{ targets: string[] }>; dns_sd_configs?: DnsSd[] };

export const checkPrometheus = listed(function* (files: OpsFiles, vars: Record<string, string | undefined> = {}) {
  const prom = parse(files.prometheus) as { rule_files?: string[]; scrape_configs?: ScrapeJob[] };
  const services = composeConfig(files.compose, vars).services ?? {};
  const jobs = prom.scrape_configs ?? [];
  const statics = (job: ScrapeJob) => (job.static_configs ?? []).flatMap((c) => c.targets).map((t) => [t, ...t.split(':')] as const);

  for (const app of APPS) {
    const port = appPort(app, services[app] ? serviceEnv(services[app]) : {});
    const job = jobs.find((j) => j.job_name === app);
    const where = `deploy/prometheus.yml job ${app}`;
    if (!job) {
      yield `deploy/prometheus.yml: no scrape job "${app}"`;
      continue;
    }
    if (job.metrics_path !== undefined && job.metrics_path !== '/metrics')
      yield `${where}: metrics_path ${job.metrics_path}, the apps serve /metrics`;
    const dns = (job.dns_sd_configs ?? []).filter((d) => d.names.includes(app));
    if (!statics(job).some(([t]) => t === `${app}:${port}`) && !dns.some((d) => (d.type ?? 'SRV') === 'A' && d.port === port))
      yield `${where}: does not scrape ${app}:${port} (its service and HTTP_PORT)`;
    for (const [t, host, p] of statics(job)) if (host === app && Number(p) !== port) yield `${where}: target ${t} but HTTP_PORT is ${port}`;
    for (const d of dns) if (d.port !== port) yield `${where}: dns_sd port ${d.port} but HTTP_PORT is ${port}`;
  }
  // Other static targets must be services of the compose file exposing that port.
  for (const job of jobs) {
    for (const [t, host, p] of statics(job)) {
      if (host === 'localhost' || host === '127.0.0.1' || (APPS as string[]).includes(host!)) continue;
      if (!services[host!]) yield `deploy/prometheus.yml job ${job.job_name}: target ${t} is not a compose service`;
      else if (!containerPorts(services[host!]!).includes(Number(p)))
        yield `deploy/prometheus.yml job ${job.job_name}: service ${host} does not expose port ${p}`;
    }
  }

  // The compose file mounts this config and the alert rules where Prometheus reads them.
  const promSvc = services['prometheus'];
  if (!promSvc) return yield 'docker-compose.yml: no service "prometheus"';
  const configPath =
    (promSvc.command ?? []).map((a) => /^--config\.file=(.*)$/.exec(a)?.[1]).find(Boolean) ?? '/etc/prometheus/prometheus.yml';
  if (!mountedAt(promSvc, './deploy/prometheus.yml').includes(configPath))
    yield `docker-compose.yml service prometheus: ./deploy/prometheus.yml is not mounted at ${configPath}`;
  const alertsAt = mountedAt(promSvc, './deploy/alerts.yml')[0];
  if (!alertsAt) yield 'docker-compose.yml service prometheus: ./deploy/alerts.yml is not mounted';
  else if (!(prom.rule_files ?? []).includes(alertsAt))
    yield `deploy/prometheus.yml: rule_files does not load ${alertsAt} (where compose mounts deploy/alerts.yml)`;
});

// ---- Metric names in alerts and dashboards --------------------------------------------------------------------
/** Problems with the metrics a PromQL expression reads: each must be defined in the code (`known`) or external. */
function* checkExpr(where: string, expr: string, known: ReadonlySet<string>): Iterable<string> {
  const [names, error] = attempt(() => metricNamesIn(expr));
  if (error !== undefined) return yield `${where}: ${error}`;
  for (const name of names)
    if (!(name in EXTERNAL_METRICS) && !metricCandidates(name).some((c) => known.has(c)))
      yield `${where}: metric ${name} is not defined anywhere in the code`;
}

type Rule = Partial<Record<'alert' | 'record' | 'expr', string> & Record<'labels' | 'annotations', Record<string, string>>>;

/** `known`: metric names defined in the code (string literals) and prom-client's default metrics as the apps register them. */
export const checkAlerts = listed(function* (files: OpsFiles, known: ReadonlySet<string>) {
  const rules = parse(files.alerts) as { groups?: Array<{ name: string; rules?: Rule[] }> } | null;
  if (!rules?.groups?.length) return yield 'deploy/alerts.yml: no rule groups';
  for (const g of rules.groups) {
    for (const r of g.rules ?? []) {
      const where = `deploy/alerts.yml ${g.name}/${r.alert ?? r.record ?? '(unnamed)'}`;
      if (!r.expr) yield `${where}: no expr`;
      else yield* checkExpr(where, r.expr, known);
      if (r.alert && !['warning', 'critical'].includes(r.labels?.['severity'] ?? ''))
        yield `${where}: labels.severity should be warning or critical`;
      if (r.alert && !r.annotations?.['summary']) yield `${where}: no annotations.summary`;
    }
  }
});

type Query = { expr?: string; datasource?: { uid?: string } };
type Panel = { type: string; title?: string; datasource?: { uid?: string }; targets?: Query[] };

export const checkGrafana = listed(function* (files: OpsFiles, known: ReadonlySet<string>) {
  const services = composeConfig(files.compose).services ?? {};
  const grafana = services['grafana'];
  if (!grafana) return yield 'docker-compose.yml: no service "grafana"';
  if (!mountedAt(grafana, './deploy/grafana/provisioning').includes('/etc/grafana/provisioning'))
    yield 'docker-compose.yml service grafana: ./deploy/grafana/provisioning is not mounted at /etc/grafana/provisioning';

  const uids = new Set<string>();
  for (const [file, text] of Object.entries(files.grafanaDatasources)) {
    for (const d of (parse(text) as { datasources?: Array<{ uid?: string; type?: string; url?: string }> }).datasources ?? []) {
      if (d.uid) uids.add(d.uid);
      const host = d.type === 'prometheus' && d.url ? new URL(d.url).hostname : undefined;
      if (host && !services[host]) yield `deploy/grafana/provisioning/datasources/${file}: url host ${host} is not a compose service`;
    }
  }
  if (uids.size === 0) yield 'deploy/grafana/provisioning/datasources: no datasource with a uid';

  const dashboardsMount = mountedAt(grafana, './deploy/grafana/dashboards')[0];
  if (!dashboardsMount) yield 'docker-compose.yml service grafana: ./deploy/grafana/dashboards is not mounted';
  const providerPaths = Object.values(files.grafanaProviders).flatMap((t) =>
    ((parse(t) as { providers?: Array<{ options?: { path?: string } }> }).providers ?? []).map((p) => p.options?.path),
  );
  if (dashboardsMount && !providerPaths.includes(dashboardsMount))
    yield `deploy/grafana/provisioning/dashboards: no provider reads ${dashboardsMount} (where compose mounts the dashboards)`;
  const home = serviceEnv(grafana)['GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH'];
  if (home && dashboardsMount && !(home.startsWith(`${dashboardsMount}/`) && posix.basename(home) in files.dashboards))
    yield `docker-compose.yml service grafana: GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH ${home} is not a dashboard in deploy/grafana/dashboards`;

  if (Object.keys(files.dashboards).length === 0) yield 'deploy/grafana/dashboards: no dashboard';
  for (const [file, text] of Object.entries(files.dashboards)) {
    const [dash, error] = attempt(() => JSON.parse(text) as { uid?: string; panels?: Array<Panel & { panels?: Panel[] }> });
    if (error !== undefined) {
      yield `deploy/grafana/dashboards/${file}: not JSON: ${error}`;
      continue;
    }
    if (!dash.uid) yield `deploy/grafana/dashboards/${file}: no uid (links to it would change on every load)`;
    const panels = (dash.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
    if (panels.length === 0) yield `deploy/grafana/dashboards/${file}: no panels`;
    for (const p of panels) {
      const where = `deploy/grafana/dashboards/${file} panel "${p.title ?? '?'}"`;
      if (!p.targets?.length) yield `${where}: no queries`;
      for (const t of p.targets ?? []) {
        const uid = t.datasource?.uid ?? p.datasource?.uid;
        if (!uid || !uids.has(uid))
          yield `${where}: datasource uid ${uid ?? '(none)'} is not a provisioned datasource (${[...uids].join(', ')})`;
        if (!t.expr) yield `${where}: a query without expr`;
        else yield* checkExpr(where, t.expr, known);
      }
    }
  }
});
