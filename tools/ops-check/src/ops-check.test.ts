import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMetrics } from '@tally/observability';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  APPS,
  checkAlerts,
  checkCompose,
  checkDockerfile,
  checkGrafana,
  checkPrometheus,
  defaultPort,
  loadOpsFiles,
  type OpsFiles,
} from './checks';
import { composeConfig, serviceEnv } from './compose';
import { parseDockerfile, resolveStage } from './dockerfile';
import { metricNamesIn, tallyNamesInCode } from './metrics';

// The deployment files cannot drift from the code unnoticed: no Docker engine runs here, so these checks read
// the Dockerfile, docker-compose.yml, deploy/prometheus.yml, deploy/alerts.yml and the Grafana files and compare
// them with the apps' config schemas (libs/config appEnvSchemas) and the metric names in the sources.

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const files = loadOpsFiles(repoRoot);
let known: Set<string>;

beforeAll(async () => {
  const names = tallyNamesInCode([join(repoRoot, 'apps'), join(repoRoot, 'libs')]);
  // prom-client's default process metrics, registered exactly as every app registers them.
  const { registry } = createMetrics({ app: 'ops-check' });
  for (const m of await registry.getMetricsAsJSON()) names.add(m.name);
  known = names;
});

/** A copy of the files with one text replaced; fails when the text is not there (a mutation that did nothing). */
function mutate(key: 'dockerfile' | 'compose' | 'prometheus' | 'alerts', from: string | RegExp, to: string): OpsFiles {
  const before = files[key];
  const after = before.replace(from, to);
  if (after === before) throw new Error(`mutation of ${key} found no ${String(from)}`);
  return { ...files, [key]: after };
}

function mutateDashboard(from: string, to: string): OpsFiles {
  const [name, text] = Object.entries(files.dashboards)[0]!;
  if (!text.includes(from)) throw new Error(`dashboard ${name} has no ${from}`);
  return { ...files, dashboards: { ...files.dashboards, [name]: text.replace(from, to) } };
}

describe('the deployment files agree with the code', () => {
  it('has a Dockerfile target per app: non-root, SIGTERM, HEALTHCHECK on /healthz at its HTTP_PORT, its bundle', () => {
    expect(checkDockerfile(files)).toEqual([]);
    const stages = parseDockerfile(files.dockerfile);
    for (const app of APPS) {
      const s = resolveStage(stages, app);
      expect(s.user).toBe('node');
      expect(s.expose).toEqual([String(defaultPort(app))]);
    }
    expect(APPS.map(defaultPort)).toEqual([7401, 7403, 7404, 7402]);
  });

  it('has a compose service per app whose environment the app accepts and whose ports match HTTP_PORT', () => {
    expect(checkCompose(files)).toEqual([]);
    // Still true with the knobs the README documents turned.
    expect(
      checkCompose(files, {
        TALLY_BUCKET_SECONDS: '60',
        TALLY_LOG_LEVEL: 'debug',
        TALLY_DYNAMODB_ENDPOINT: '',
        TALLY_COLLECTOR_PORT: '8401',
      }),
    ).toEqual([]);
    const services = composeConfig(files.compose).services;
    for (const app of APPS) expect(services[app], app).toBeDefined();
  });

  it('scrapes every app on its port, and loads the alert rules compose mounts', () => {
    expect(checkPrometheus(files)).toEqual([]);
  });

  it('alerts on metrics that exist', () => {
    expect(checkAlerts(files, known)).toEqual([]);
  });

  it('has a Grafana datasource and dashboard whose panels read metrics that exist', () => {
    expect(checkGrafana(files, known)).toEqual([]);
    const exprs = Object.values(files.dashboards).flatMap((t) =>
      (JSON.parse(t).panels as Array<{ targets?: Array<{ expr: string }> }>).flatMap((p) =>
        (p.targets ?? []).map((q) => q.expr.replace(/\s+/g, '')),
      ),
    );
    // The panels the operations issue asks for.
    for (const wanted of [
      'sum(rate(tally_events_received_total[1m]))',
      'max by (queue, state) (tally_queue_jobs{state=~"waiting|active|delayed|prioritized"})',
      'max(tally_flush_lag_seconds)',
      'sum(rate(tally_dynamodb_consumed_write_units_total[1m])) * 60',
      'max by (queue) (tally_queue_jobs{state="failed"})',
    ]) {
      expect(exprs, wanted).toContain(wanted.replace(/\s+/g, ''));
    }
  });
});

describe('the checks catch drift', () => {
  it('an environment variable no app reads, or a value it refuses', () => {
    const collectorEnv = '86400}\n    ports:\n      - "127.0.0.1:${TALLY_COLLECTOR_PORT';
    const extra = mutate('compose', collectorEnv, collectorEnv.replace('\n    ports', '\n      BATCH_LIMIT: "5"\n    ports'));
    expect(checkCompose(extra)).toEqual([
      'docker-compose.yml service collector: environment BATCH_LIMIT is not read by collector (not in appEnvSchemas.collector)',
    ]);
    // The collector never reads BUCKET_SECONDS: only the aggregator cuts buckets.
    const dead = mutate('compose', collectorEnv, collectorEnv.replace('\n    ports', '\n      BUCKET_SECONDS: "600"\n    ports'));
    expect(checkCompose(dead)).toEqual([
      'docker-compose.yml service collector: environment BUCKET_SECONDS is not read by collector (not in appEnvSchemas.collector)',
    ]);
    // DEDUPE_WINDOW_SECONDS exists, but not for the writer.
    const wrongApp = mutate(
      'compose',
      '      <<: *tally-env\n    expose:\n      - "7404"',
      '      <<: *tally-env\n      DEDUPE_WINDOW_SECONDS: "600"\n    expose:\n      - "7404"',
    );
    expect(checkCompose(wrongApp)).toEqual([
      'docker-compose.yml service dynamo-writer: environment DEDUPE_WINDOW_SECONDS is not read by dynamo-writer (not in appEnvSchemas.dynamo-writer)',
    ]);
    // Every program that reads the dedupe window gets it, and the same one.
    const window =
      "      # A deleted store's or erased row's tombstone lasts as long as a batch id can still be applied.\n      DEDUPE_WINDOW_SECONDS: ${TALLY_DEDUPE_WINDOW_SECONDS:-86400}\n";
    expect(checkCompose(mutate('compose', window, ''))).toEqual([
      'docker-compose.yml service query-api: reads DEDUPE_WINDOW_SECONDS but does not set it, so it keeps the default when the others change',
    ]);
    expect(checkCompose(mutate('compose', window, '      DEDUPE_WINDOW_SECONDS: "3600"\n'))).toEqual([
      'docker-compose.yml: the services disagree on DEDUPE_WINDOW_SECONDS (collector 86400, bucket-aggregator 86400, query-api 3600, dlq 86400, tenants 86400)',
    ]);
    expect(checkCompose(files, { TALLY_DEDUPE_WINDOW_SECONDS: '172800' })).toEqual([]);
    expect(checkCompose(files, { TALLY_BUCKET_SECONDS: 'soon' })).toContain(
      'docker-compose.yml service bucket-aggregator: environment does not parse: BUCKET_SECONDS: expected a number; got "soon"',
    );
    const host = mutate('compose', 'REDIS_URL: redis://redis:6379\n  # Empty', 'REDIS_URL: redis://cache:6379\n  # Empty');
    expect(checkCompose(host)).toContain(
      'docker-compose.yml service query-api: REDIS_URL host "cache" is not a service of docker-compose.yml',
    );
  });

  it('a port that disagrees with HTTP_PORT, in compose, the Dockerfile or Prometheus', () => {
    const port = mutate('compose', '"127.0.0.1:${TALLY_QUERY_API_PORT:-7402}:7402"', '"127.0.0.1:${TALLY_QUERY_API_PORT:-7402}:7412"');
    expect(checkCompose(port)).toEqual(['docker-compose.yml service query-api: container port 7412 but the app listens on HTTP_PORT 7402']);
    // A port with no host side, which `docker-compose config` prints in the long syntax (`- target: 7412`).
    const unpublished = mutate('compose', '"127.0.0.1:${TALLY_QUERY_API_PORT:-7402}:7402"', '"7412"');
    expect(checkCompose(unpublished)).toEqual([
      'docker-compose.yml service query-api: container port 7412 but the app listens on HTTP_PORT 7402',
    ]);

    const moved = mutate(
      'compose',
      '      <<: *tally-env\n    expose:\n      - "7404"',
      '      <<: *tally-env\n      HTTP_PORT: "7504"\n    expose:\n      - "7404"',
    );
    expect(checkCompose(moved)).toEqual([
      'docker-compose.yml service dynamo-writer: container port 7404 but the app listens on HTTP_PORT 7504',
    ]);
    expect(checkPrometheus(moved)).toEqual([
      'deploy/prometheus.yml job dynamo-writer: does not scrape dynamo-writer:7504 (its service and HTTP_PORT)',
      'deploy/prometheus.yml job dynamo-writer: dns_sd port 7404 but HTTP_PORT is 7504',
    ]);

    const hc = mutate('dockerfile', '(process.env.HTTP_PORT||7403)', '(process.env.HTTP_PORT||7404)');
    expect(checkDockerfile(hc)).toEqual(['Dockerfile target bucket-aggregator: HEALTHCHECK probes port 7404 but HTTP_PORT is 7403']);

    const scrape = mutate('prometheus', 'port: 7401', 'port: 7400');
    expect(checkPrometheus(scrape)).toEqual([
      'deploy/prometheus.yml job collector: does not scrape collector:7401 (its service and HTTP_PORT)',
      'deploy/prometheus.yml job collector: dns_sd port 7400 but HTTP_PORT is 7401',
    ]);
  });

  it('a missing target, a root user, a lost signal, an image ENV the app does not read', () => {
    expect(checkDockerfile(mutate('dockerfile', 'AS dynamo-writer', 'AS writer'))).toEqual([
      'Dockerfile: no target "dynamo-writer" (docker build --target dynamo-writer)',
    ]);
    const root = checkDockerfile(mutate('dockerfile', /^USER node$/m, 'USER root'));
    expect(root).toContain('Dockerfile target collector: runs as root; run as a non-root user');
    expect(checkDockerfile(mutate('dockerfile', 'STOPSIGNAL SIGTERM', 'STOPSIGNAL SIGINT'))).toContain(
      'Dockerfile target query-api: STOPSIGNAL is SIGINT, want SIGTERM (the apps shut down gracefully on it)',
    );
    expect(
      checkDockerfile(
        mutate('dockerfile', 'ENV DASHBOARD_DIR=/app/dashboard', 'ENV DASHBOARD_DIR=/app/dashboard TALLY_DASHBOARD=/app/dashboard'),
      ),
    ).toEqual(['Dockerfile target query-api: ENV TALLY_DASHBOARD is not read by query-api (not in appEnvSchemas.query-api)']);
    expect(checkDockerfile(mutate('dockerfile', 'ENV DASHBOARD_DIR=/app/dashboard', 'ENV DASHBOARD_DIR=/srv/dashboard'))).toEqual([
      'Dockerfile target query-api: DASHBOARD_DIR (/srv/dashboard) is not where apps/dashboard/dist is copied',
    ]);
  });

  it('no create-table service: Compose refuses the apps that depend on it', () => {
    const gone = mutate('compose', /\n {2}# One-shot: creates the table[^]*?restart: "no"\n/, '\n');
    expect(checkCompose(gone)).toEqual([expect.stringMatching(/^docker-compose\.yml: .*create-table/)]);
  });

  it('Redis without AOF or with eviction', () => {
    expect(checkCompose(mutate('compose', '- noeviction', '- allkeys-lru'))).toEqual([
      'docker-compose.yml service redis: --maxmemory-policy is allkeys-lru, want noeviction (BullMQ: AOF and no eviction)',
    ]);
    expect(checkCompose(mutate('compose', '${TALLY_REDIS_APPENDFSYNC:-always}', '"no"'))).toEqual([
      'docker-compose.yml service redis: --appendfsync is no, want everysec or always (BullMQ: AOF and no eviction)',
    ]);
    expect(checkCompose(mutate('compose', '${TALLY_REDIS_APPENDFSYNC:-always}', 'everysec'))).toEqual([]);
  });

  it('a dashboard panel or an alert on a metric the code does not export', () => {
    const typo = mutateDashboard('sum(rate(tally_events_received_total[1m]))', 'sum(rate(tally_events_recieved_total[1m]))');
    expect(checkGrafana(typo, known)).toContain(
      'deploy/grafana/dashboards/tally.json panel "Events received /s": metric tally_events_recieved_total is not defined anywhere in the code',
    );
    const alert = mutate('alerts', 'max(tally_flush_lag_seconds) > 90000', 'max(tally_flush_delay_seconds) > 90000');
    expect(checkAlerts(alert, known)).toEqual([
      'deploy/alerts.yml tally-flush/TallyFlushLagHigh: metric tally_flush_delay_seconds is not defined anywhere in the code',
    ]);
  });
});

describe("promtool (Debian's prometheus package; .ci/run installs it)", () => {
  /** promtool's exit code and output; a clear failure when it is not installed. */
  const promtool = (args: string[], cwd = repoRoot) => {
    const r = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
    if (r.error) throw new Error(`promtool: ${r.error.message} (install it: apt-get install prometheus, as .ci/run does)`);
    return { status: r.status, output: `${r.stdout}${r.stderr}` };
  };

  it('accepts deploy/prometheus.yml and deploy/alerts.yml, and the alerts pass their unit tests (deploy/alerts.test.yml)', () => {
    expect(promtool(['check', 'config', '--syntax-only', 'deploy/prometheus.yml'])).toMatchObject({ status: 0 });
    expect(promtool(['check', 'rules', 'deploy/alerts.yml'])).toMatchObject({ status: 0 });
    const tests = promtool(['test', 'rules', 'deploy/alerts.test.yml']);
    expect(tests.output).toContain('SUCCESS');
    expect(tests.status).toBe(0);
  });

  it('refuses an alert whose PromQL does not parse, and fails a unit test the rules no longer meet', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tally-promtool-'));
    try {
      writeFileSync(
        join(dir, 'alerts.yml'),
        mutate('alerts', 'max(tally_flush_lag_seconds) > 90000', 'max(tally_flush_lag_seconds > 90000').alerts,
      );
      expect(promtool(['check', 'rules', 'alerts.yml'], dir)).toMatchObject({ status: 1, output: expect.stringMatching(/parse error/) });
      // Dead letters alerting only above 5 failed jobs: its unit test (3 failed jobs fire it) no longer passes.
      const five = mutate(
        'alerts',
        'max by (queue) (tally_queue_jobs{state="failed"}) > 0',
        'max by (queue) (tally_queue_jobs{state="failed"}) > 5',
      );
      writeFileSync(join(dir, 'alerts.yml'), five.alerts);
      writeFileSync(join(dir, 'alerts.test.yml'), readFileSync(join(repoRoot, 'deploy/alerts.test.yml'), 'utf8'));
      expect(promtool(['test', 'rules', 'alerts.test.yml'], dir)).toMatchObject({
        status: 1,
        output: expect.stringMatching(/TallyDeadLetters/),
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('helpers', () => {
  it('reads compose files through docker-compose config: interpolation like compose, and its errors', () => {
    const text = [
      'services:',
      '  s:',
      '    image: x',
      '    environment:',
      '      A1: ${A:-x}',
      '      A2: ${A-x}',
      '      B: $B and ${B}',
      '      C: cost $$5',
    ].join('\n');
    const env = (vars: Record<string, string>) => serviceEnv(composeConfig(text, vars).services['s']!);
    expect(env({})).toEqual({ A1: 'x', A2: 'x', B: ' and ', C: 'cost $5' });
    expect(env({ A: '', B: '2' })).toEqual({ A1: 'x', A2: '', B: '2 and 2', C: 'cost $5' });
    expect(() => composeConfig('services:\n  s:\n    image: x\n    stop_grace_period: [1]\n')).toThrowError(/stop_grace_period/);
  });

  it('find metric names in PromQL, not functions, labels or keywords', () => {
    expect(
      metricNamesIn(
        'sum by (queue, state) (rate(tally_a_total{state="failed", x=~"a|b"}[5m])) / on(app) group_left tally_b > 0 and up == 1',
      ),
    ).toEqual(['tally_a_total', 'tally_b', 'up']);
    expect(metricNamesIn('histogram_quantile(0.99, sum by (le) (rate(tally_h_seconds_bucket[5m])))')).toEqual(['tally_h_seconds_bucket']);
  });
});

describe('docs/ARCHITECTURE.md', () => {
  const doc = readFileSync(join(repoRoot, 'docs/ARCHITECTURE.md'), 'utf8');

  it('names only files and folders that exist', () => {
    const paths = [...doc.matchAll(/`((?:apps|libs|tools|docs|deploy)\/[^`\s]+)`/g)].map((m) => m[1]!);
    expect(paths.length).toBeGreaterThan(20);
    expect(paths.filter((p) => !existsSync(join(repoRoot, p)))).toEqual([]);
  });

  it("maps each stage to a file its app's main.ts imports and marks", () => {
    const rows = [...doc.matchAll(/^\| (apply|seal|fold|outbox|write|merge) \| `([^`]+main\.ts)` → `([^`]+)`/gm)];
    expect(rows.map((r) => r[1])).toEqual(['apply', 'seal', 'fold', 'outbox', 'write', 'merge']);
    for (const [, stage, main, target] of rows) {
      const source = readFileSync(join(repoRoot, main!), 'utf8');
      const from = target!.startsWith('libs/') ? `'@tally/${basename(target!)}'` : `'./${basename(target!, '.ts')}'`;
      expect(source, `${main} imports ${target}`).toContain(` from ${from};`);
      expect(source, `${main} marks stage ${stage}`).toMatch(new RegExp(`// Stages? .*"${stage}"`));
    }
  });
});
