// node tools/build-apps/run-built.mjs <bundle> [arguments…]: runs an operator tool (or an app: the tests' fleets) from
// dist/<bundle>/main.mjs in this process, so a call starts in a fraction of a second instead of compiling TypeScript.
// When a file of its sources.json is newer than the bundle, it is rebuilt first, with a line on stderr.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { enableCompileCache } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const [name, ...args] = process.argv.slice(2);
if (!name || !/^[a-z-]+$/.test(name)) {
  process.stderr.write('usage: node tools/build-apps/run-built.mjs <bundle> [arguments…]\n');
  process.exit(2);
}
const main = join(repoRoot, 'dist', name, 'main.mjs');

const mtime = (file) => statSync(file, { throwIfNoEntry: false })?.mtimeMs;

/** Why the bundle must be built, or undefined when it is newer than every file it was built from. */
function staleness() {
  const built = mtime(main);
  if (built === undefined) return 'not built yet';
  let sources;
  try {
    sources = JSON.parse(readFileSync(join(repoRoot, 'dist', name, 'sources.json'), 'utf8'));
  } catch {
    return 'built without a list of its sources';
  }
  // A file gone since (moved, deleted) counts as changed: its importer changed too, or the build would fail.
  return sources.some((file) => (mtime(join(repoRoot, file)) ?? Infinity) > built) ? 'sources changed' : undefined;
}

/** Whether the process whose pid the lock holds is still running (false once the lock is gone). */
function holderAlive(lock) {
  try {
    process.kill(Number(readFileSync(join(lock, 'pid'), 'utf8')), 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

// Built by one process at a time: others started together (a test fleet's apps) wait, then find it fresh. The lock is
// a directory holding the builder's pid, put in place whole by a rename (which fails onto a lock that exists); a dead
// builder's lock is taken over.
const lock = join(repoRoot, 'dist', `.${name}.lock`);
for (let why = staleness(); why; why = staleness()) {
  const mine = `${lock}.${process.pid}`;
  mkdirSync(mine, { recursive: true });
  writeFileSync(join(mine, 'pid'), String(process.pid));
  try {
    renameSync(mine, lock);
  } catch (e) {
    rmSync(mine, { recursive: true, force: true });
    if (e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST') throw e;
    if (holderAlive(lock)) await new Promise((resolve) => setTimeout(resolve, 100));
    else rmSync(lock, { recursive: true, force: true });
    continue;
  }
  process.stderr.write(`tally: building ${name} (${why})\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'tools/build-apps/src/main.ts', '--only', name], {
    cwd: repoRoot,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  rmSync(lock, { recursive: true, force: true });
  if (r.status !== 0) process.exit(r.status ?? 1);
  break;
}

// V8's code cache on disk: a multi-megabyte bundle is not compiled again on every call. No source maps: reading one
// costs about as much as running a command; NODE_OPTIONS=--enable-source-maps maps a trace when one is wanted.
enableCompileCache();
process.argv = [process.argv[0], main, ...args];
await import(pathToFileURL(main).href);
