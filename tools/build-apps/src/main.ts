// npm run build:apps [-- --only collector,dlq] [--out-dir dir]: bundles the apps and operator tools with esbuild
// into dist/<name>/main.mjs (ESM, node24, source map), what the Dockerfile's runtime stages copy.
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildBundles, describeBundles } from './build';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

try {
  const { values } = parseArgs({ options: { only: { type: 'string' }, 'out-dir': { type: 'string' } } });
  const started = Date.now();
  const built = await buildBundles({
    repoRoot,
    outDir: values['out-dir'],
    only: values.only
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  });
  for (const line of describeBundles(built, repoRoot)) process.stdout.write(`${line}\n`);
  process.stdout.write(`tally: built ${built.length} bundles in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
} catch (err) {
  process.stderr.write(`tally: build failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
