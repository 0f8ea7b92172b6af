import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { BucketStore } from '@tally/buckets';
import { compileRules, defaultRules } from '@tally/schema';
import { metricValue, REPO_ROOT, waitFor } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// @tally/client as a user gets it: `npm pack`, installed from the tarball into a project outside the workspace,
// imported from plain Node ESM, CommonJS and TypeScript (typechecked by tsc), enqueuing to a real Redis that a
// real aggregator process counts from.
const run = promisify(execFile);
const STORE = 'PKGSTORE';
let scratch: string;
const stack = useStack({ tenants: [STORE] });

/** The environment without what `npm test` / `npm run` set for the workspace, so npm in the scratch project acts as a user's. */
function userEnv(): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'INIT_CWD' && k !== 'NODE_OPTIONS'));
}

const node = (file: string, redisUrl: string) => run(process.execPath, [file, redisUrl], { cwd: scratch, env: userEnv() });

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'tally-client-pkg-'));

  // npm pack runs the package's prepack (the build); the tarball goes outside the workspace.
  const packs = join(scratch, 'packs');
  mkdirSync(packs);
  await run('npm', ['pack', '--pack-destination', packs, '--silent'], { cwd: join(REPO_ROOT, 'libs/client'), env: userEnv() });
  const [tarball] = readdirSync(packs).filter((f) => f.endsWith('.tgz'));
  expect(tarball).toMatch(/^tally-client-\d+\.\d+\.\d+\.tgz$/);

  const app = join(scratch, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, version: '1.0.0' }));
  // From the local npm cache where it can be (the client's dependencies are the workspace's).
  await run('npm', ['install', join(packs, tarball!), '@types/node@24', '--prefer-offline', '--no-audit', '--no-fund'], {
    cwd: app,
    env: userEnv(),
  });
  scratch = app;

  writeFileSync(
    join(app, 'esm.mjs'),
    `import { createRequire } from 'node:module';
import * as esm from '@tally/client';
const client = esm.createTallyClient({ connection: process.argv[2] });
const r = await client.enqueueEvents('${STORE}', [1, 2, 3].map((i) => ({ type: 'view', ts: Date.now() - i, dims: { product: 'P' + i } })), { idempotencyKey: 'esm-1' });
await client.close();
// One copy of the package whether imported or required: an error from either is an instance of the other's class.
const cjs = createRequire(import.meta.url)('@tally/client');
let cjsError;
try {
  cjs.createTallyClient({ connection: 'localhost:6379' });
} catch (e) {
  cjsError = e;
}
const sameClasses = ['ValidationError', 'InvalidArgumentError', 'QueueUnavailableError', 'ClientClosedError'].every((n) => esm[n] === cjs[n]);
console.log(JSON.stringify({ ...r, sameClasses, cjsErrorIsEsmClass: cjsError instanceof esm.InvalidArgumentError }));
`,
  );
  writeFileSync(
    join(app, 'cjs.cjs'),
    `const { createTallyClient, ValidationError } = require('@tally/client');
(async () => {
  const client = createTallyClient({ connection: process.argv[2] });
  let refused = '';
  try {
    await client.enqueueEvents('${STORE}', [{ type: 'view', ts: 'not a time' }]);
  } catch (err) {
    if (err instanceof ValidationError) refused = err.code;
  }
  const r = await client.enqueueEvents('${STORE}', [{ type: 'view', ts: Date.now(), dims: { product: 'P9' } }, { type: 'view', ts: Date.now(), dims: { product: 'P8' } }], { idempotencyKey: 'cjs-1' });
  await client.close();
  console.log(JSON.stringify({ ...r, refused }));
})();
`,
  );
  writeFileSync(
    join(app, 'typed.mts'),
    `import { ClientClosedError, createTallyClient, type TallyClient, QueueUnavailableError } from '@tally/client';
const client: TallyClient = createTallyClient({ connection: process.argv[2]!, readyTimeoutMs: 5_000 });
const r: { batchId: string; accepted: number } = await client.enqueueEvents('${STORE}', [{ type: 'view', ts: Date.now(), dims: { product: 'P1' } }], { idempotencyKey: 'ts-1' });
// @ts-expect-error: the declarations are real types, not any: a store id is a string
await client.enqueueEvents(42, []).catch(() => undefined);
await client.close();
const code: 'TALLY_ERR_CLIENT_CLOSED' = new ClientClosedError().code;
console.log(JSON.stringify({ ...r, isError: new QueueUnavailableError('x') instanceof Error, code }));
`,
  );
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { module: 'nodenext', target: 'es2023', strict: true, outDir: 'out', types: ['node'] },
      files: ['typed.mts'],
    }),
  );
}, 480_000);

afterAll(async () => {
  if (scratch) rmSync(join(scratch, '..'), { recursive: true, force: true });
});

describe('the packed @tally/client in a project outside the workspace', () => {
  it('is imported from ESM, CommonJS and typechecked TypeScript, and what it enqueues is counted by the aggregator', async () => {
    const tsc = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
    await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: scratch, env: userEnv() }); // throws with tsc's errors

    const esm = JSON.parse((await node('esm.mjs', stack.redisServer.url)).stdout);
    const cjs = JSON.parse((await node('cjs.cjs', stack.redisServer.url)).stdout);
    const ts = JSON.parse((await node('out/typed.mjs', stack.redisServer.url)).stdout);
    expect(esm).toMatchObject({ accepted: 3, sameClasses: true, cjsErrorIsEsmClass: true });
    expect(cjs).toMatchObject({ accepted: 2, refused: 'TALLY_ERR_VALIDATION' });
    expect(ts).toMatchObject({ accepted: 1, isError: true, code: 'TALLY_ERR_CLIENT_CLOSED' });

    const aggregator = await stack.startApp('bucket-aggregator', { env: { SEALER_ENABLED: 'false' } });
    await waitFor(async () => metricValue(await aggregator.metrics(), 'tally_events_applied_total') === 6, {
      timeoutMs: 30_000,
      message: '6 events applied',
    });
    expect(metricValue(await aggregator.metrics(), 'tally_batches_applied_total')).toBe(3);

    const [row] = await new BucketStore({ redis: stack.redis, rules: compileRules(defaultRules) }).snapshot(STORE, [STORE]);
    expect(row!.entries.filter((e) => e.metric === 'v').reduce((s, e) => s + e.value, 0n)).toBe(6n);
  }, 300_000);

  it('ships a source map naming no file the install lacks: its sources are URLs of their own, with their text', async () => {
    const dist = join(scratch, 'node_modules/@tally/client/dist');
    const maps = readdirSync(dist).filter((f) => f.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(0);
    for (const m of maps) {
      const map = JSON.parse(readFileSync(join(dist, m), 'utf8')) as { sources: string[]; sourceRoot?: string; sourcesContent?: string[] };
      expect(map.sourcesContent, m).toHaveLength(map.sources.length);
      for (const source of map.sources) {
        // A path (relative, absolute or file:) would name a file of this repository (../../intake/src/intake.ts),
        // which a user's node_modules/@tally/client does not hold, unless it is a file of the package.
        const url = new URL(`${map.sourceRoot ?? ''}${source}`, `file://${dist}/`);
        if (url.protocol === 'file:') {
          const at = resolve(url.pathname);
          expect(relative(join(scratch, 'node_modules/@tally/client'), at), source).not.toMatch(/^\.\./);
          expect(existsSync(at), source).toBe(true);
        } else expect(source).toMatch(/^tally-client:\/\/\/libs\/[a-z-]+\/src\/[\w.-]+\.ts$/);
      }
    }
    // What node --enable-source-maps shows: the frame of the check that threw, named by that URL.
    writeFileSync(join(scratch, 'trace.cjs'), "require('@tally/client').createTallyClient({ connection: 'localhost:6379' });\n");
    const thrown = await run(process.execPath, ['--enable-source-maps', 'trace.cjs'], { cwd: scratch, env: userEnv() }).catch(
      (e: { stderr: string }) => e.stderr,
    );
    expect(thrown).toMatch(/InvalidArgumentError: connection "localhost:6379" is not a redis:\/\/ or rediss:\/\/ URL/);
    expect(thrown).toMatch(/tally-client:\/\/\/libs\/intake\/src\/connection\.ts:\d+:\d+/);
    expect(thrown).not.toMatch(/node_modules\/@tally\/(intake|queues|schema|key-layout|config)\//);
  });
});
