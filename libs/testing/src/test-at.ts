// `npm run test:at -- <when> [vitest args…]`: runs vitest with the wall clock of every Node process (vitest, its
// workers and the apps e2e tests start) shifted so that it reads <when> now. redis-server and Chromium keep the
// real clock. <when> is HH:MM (UTC, today) or an ISO instant with a zone:
//   npm run test:at -- 00:03
//   npm run test:at -- 23:59 --project client
//   npm run test:at -- 2027-03-28T00:58:30Z apps/query-api
import { spawn } from 'node:child_process';
import path from 'node:path';
import { clockOffsetTo, clockShiftEnv } from './clock-shift';
import { REPO_ROOT } from './fleet';

const [at, ...vitestArgs] = process.argv.slice(2);
if (!at || at.startsWith('-')) {
  process.stderr.write('usage: npm run test:at -- <HH:MM (UTC) | ISO instant> [vitest args…]\n');
  process.exit(2);
}
let offset: number;
try {
  offset = clockOffsetTo(at, Date.now());
} catch (err) {
  process.stderr.write(`test:at: ${(err as Error).message}\n`);
  process.exit(2);
}
process.stderr.write(`test:at: Node clocks read ${new Date(Date.now() + offset).toISOString()} now (offset ${offset} ms)\n`);
const env = { ...process.env, ...clockShiftEnv(offset, process.env['NODE_OPTIONS']) };
const child = spawn(process.execPath, [path.join(REPO_ROOT, 'node_modules/vitest/vitest.mjs'), 'run', ...vitestArgs], {
  cwd: REPO_ROOT,
  env,
  stdio: 'inherit',
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
