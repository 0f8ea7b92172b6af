// node tools/build-apps/run-built.mjs <bundle> [arguments…]: runs an operator tool from its built JavaScript,
// dist/<bundle>/main.mjs (tools/build-apps), in this process, so a call starts in a fraction of a second instead of
// compiling TypeScript each time. When a source file (apps, libs, tools) or package-lock.json is newer than the
// bundle, it is rebuilt first, with a line on stderr; stdout stays the tool's own.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
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

const mtime = (file) => {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return undefined;
  }
};

/** Newest mtime of the TypeScript sources under `dir` (skipping node_modules and dist), or 0. */
function newestSource(dir) {
  let newest = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    if (entry.name === 'node_modules' || entry.name === 'dist' || entry.name.startsWith('.')) continue;
    const full = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(full));
    else if (entry.name.endsWith('.ts') || entry.name === 'package.json') newest = Math.max(newest, mtime(full) ?? 0);
  }
  return newest;
}

const built = mtime(main);
const sources = Math.max(mtime(join(repoRoot, 'package-lock.json')) ?? 0, ...['apps', 'libs', 'tools'].map((d) => newestSource(join(repoRoot, d))));
if (built === undefined || sources > built) {
  process.stderr.write(`tally: building ${name} (${built === undefined ? 'not built yet' : 'sources changed'})\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'tools/build-apps/src/main.ts', '--only', name], {
    cwd: repoRoot,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

// V8's code cache on disk (the OS temp dir): a multi-megabyte bundle is not compiled again on every call.
enableCompileCache();
process.setSourceMapsEnabled(true);
process.argv = [process.argv[0], main, ...args];
await import(pathToFileURL(main).href);
