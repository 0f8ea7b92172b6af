// npm run build:apps [-- --only collector,dlq] [--out-dir dir]: bundles the apps and operator tools with esbuild
// into dist/<name>/main.mjs (ESM, node24, source map), what the Dockerfile's runtime stages copy.
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildBundles } from './build';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
try {
  const { values } = parseArgs({ options: { only: { type: 'string' }, 'out-dir': { type: 'string' } } });
  const started = Date.now();
  const only = values.only?.split(',').flatMap((s) => s.trim() || []);
  const built = await buildBundles({ repoRoot, outDir: values['out-dir'], only });
  for (const { dir, bytes, copiedPackages: copied } of built) {
    const modules = copied.length > 0 ? ` + node_modules (${copied.length} packages: ${copied.join(', ')})` : '';
    const where = dir.startsWith(repoRoot) ? relative(repoRoot, dir) : dir;
    process.stdout.write(`${where}/main.mjs  ${(bytes / 1024 / 1024).toFixed(1)} MB${modules}\n`);
  }
  process.stdout.write(`tally: built ${built.length} bundles in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
} catch (err) {
  process.stderr.write(`tally: build failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
