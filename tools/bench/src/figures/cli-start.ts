import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '@tally/testing';
import { benchFleet } from '../load';
import { figure } from '../figure';
import { cpuSeconds } from '../proc';
import { median, ms } from '../stats';

const STORE = 'BENCHCLI';
const run = promisify(execFile);

/** This process's children's CPU (the children it waited for), in ms. */
const childrenCpuMs = () => cpuSeconds('self', true) * 1000;

/**
 * Runs one command, as a user types it (`npm run` quietly, `node` as this Node), from the repository root to its
 * exit; wall and CPU ms. Throws on a non-zero exit, with its output.
 */
async function timeOne(command: string, env: NodeJS.ProcessEnv): Promise<{ wallMs: number; cpuMs: number }> {
  const [cmd, ...args] = command.replace(/^npm run/, 'npm run -s').split(' ');
  const [cpu0, t0] = [childrenCpuMs(), performance.now()];
  await run(cmd === 'node' ? process.execPath : cmd!, args, { cwd: REPO_ROOT, env });
  return { wallMs: performance.now() - t0, cpuMs: childrenCpuMs() - cpu0 };
}

/** How long the operator CLIs take to start and answer, as a user runs them (the method is in the markdown below). */
async function measureCliStart(opts: { quick: boolean; log: (l: string) => void }) {
  const rounds = opts.quick ? 3 : 11;
  // Redis and dynalite with the store's tenant, and no app.
  const fleet = await benchFleet({
    stores: [{ id: STORE, timeZone: 'Europe/Paris' }],
    replicas: { collector: 0, 'query-api': 0, 'bucket-aggregator': 0, 'dynamo-writer': 0 },
  });
  try {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      REDIS_URL: fleet.redis.url,
      DYNAMODB_ENDPOINT: fleet.dynalite.endpoint,
      DYNAMODB_TABLE: fleet.table,
      AWS_REGION: 'us-east-1',
      // No running `npm start` stack is looked for: the variables above win anyway.
      TALLY_DATA_DIR: join(REPO_ROOT, '.data-bench-none'),
    };
    const runBuilt = 'node tools/build-apps/run-built.mjs';
    const commands = [
      'node -e 0',
      'npm run dlq -- --help',
      'npm run dlq -- list',
      `npm run tenants -- show ${STORE}`,
      `npm run tenants -- list-keys ${STORE}`,
      `${runBuilt} dlq list`,
      `${runBuilt} tenants show ${STORE}`,
    ];
    // Warm-up: builds the bundles if the sources changed, and fills Node's compile cache, as any earlier call would.
    for (const c of commands) await timeOne(c, env);
    const runs = commands.map((command) => {
      const [wallMs, cpuMs]: [number[], number[]] = [[], []];
      return { command, name: command.replace(runBuilt, 'node run-built.mjs'), wallMs, cpuMs };
    });
    for (let r = 0; r < rounds; r++) {
      for (const run of runs) {
        const t = await timeOne(run.command, env);
        run.wallMs.push(t.wallMs);
        run.cpuMs.push(t.cpuMs);
      }
      opts.log(`round ${r + 1}/${rounds}`);
    }
    for (const run of runs) for (const xs of [run.wallMs, run.cpuMs]) xs.sort((a, b) => a - b);
    return { rounds, runs };
  } finally {
    await fleet.stop();
  }
}

export const cliStartFigure = figure('cli-start', async (ctx) => {
  const f = await measureCliStart(ctx);
  const of = (name: string) => f.runs.find((r) => r.name === name)!;
  const npmRuns = f.runs.filter((r) => r.name.startsWith('npm run'));
  const slowest = npmRuns.reduce((a, b) => (median(b.wallMs) > median(a.wallMs) ? b : a));
  const summary =
    `median wall ${npmRuns.map((r) => `${r.name.replace('npm run ', '').replace(' -- ', ' ')} ${ms(median(r.wallMs))} ms`).join(', ')}; ` +
    `slowest ${ms(median(slowest.wallMs))} ms (${ms(median(slowest.cpuMs))} ms CPU); node -e 0 ${ms(median(of('node -e 0').wallMs))} ms`;
  const markdown = [
    `Each command is a whole process started from the repository root, as a user types it,`,
    `against a local redis-server and dynalite (a child process) with one tenant; ${f.rounds} rounds after a warm-up call,`,
    'the commands round-robin within each round, so load changes hit them alike. Wall: spawn to exit. CPU: user + system',
    'time of the process and its children (npm, node). `node run-built.mjs` is the script `npm run` runs, without npm.',
    '',
    '| Command | median wall (ms) | min – max wall (ms) | median CPU (ms) |',
    '| --- | ---: | ---: | ---: |',
    ...f.runs.map(
      (r) => `| \`${r.name}\` | ${ms(median(r.wallMs))} | ${ms(r.wallMs[0]!)} – ${ms(r.wallMs.at(-1)!)} | ${ms(median(r.cpuMs))} |`,
    ),
    '',
    'Rerun: `npm run bench -- cli-start`. On a busy machine wall time is CPU time stretched by the run queue; the CPU',
    'column is the part the CLIs control.',
  ].join('\n');
  return { summary, markdown };
});
