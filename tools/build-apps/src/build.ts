import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { build, type Metafile } from 'esbuild';

/** One bundle: `dist/<name>/main.mjs` from `entry` (relative to the repository root). */
interface BundleTarget {
  name: string;
  entry: string;
  /** Packages that read files next to their sources at run time: copied, with their dependencies, into its node_modules. */
  external?: readonly string[];
  /** Split at dynamic imports into `chunks/`, so a command loads only the code it runs (`--help` loads no SDK). */
  split?: boolean;
}

/**
 * The four apps (one image target each, see the Dockerfile) and the operator tools shipped in the `tools` image.
 * `@fastify/swagger-ui` serves its `static/` directory from `__dirname`, so it stays a real package.
 */
export const TARGETS: readonly BundleTarget[] = [
  { name: 'collector', entry: 'apps/collector/src/main.ts' },
  { name: 'query-api', entry: 'apps/query-api/src/main.ts', external: ['@fastify/swagger-ui'] },
  { name: 'bucket-aggregator', entry: 'apps/bucket-aggregator/src/main.ts' },
  { name: 'dynamo-writer', entry: 'apps/dynamo-writer/src/main.ts' },
  { name: 'create-table', entry: 'tools/create-table/src/main.ts' },
  { name: 'dlq', entry: 'tools/dlq/src/main.ts', split: true },
  { name: 'tenants', entry: 'tools/tenants/src/main.ts', split: true },
];

/** Bundled CommonJS code refers to `require`, `__filename` and `__dirname` as free variables; esbuild's ESM has none. */
const CJS_SHIM = [
  "import { createRequire as __tallyCreateRequire } from 'node:module';",
  'const require = __tallyCreateRequire(import.meta.url);',
  'const __filename = import.meta.filename;',
  'const __dirname = import.meta.dirname;',
].join(' ');

/** Required inside a try/catch only for features Tally does not use (BullMQ's other backends; Tally uses ioredis). */
const OPTIONAL_REQUIRES: readonly string[] = ['@valkey/valkey-glide', 'pg'];

/** Bundles each target (default: all) into `<outDir>/<name>/`; returns each one's directory, bytes and copied packages. */
export async function buildBundles(opts: { repoRoot: string; outDir?: string; only?: readonly string[] }) {
  const repoRoot = resolve(opts.repoRoot);
  const outDir = resolve(opts.outDir ?? join(repoRoot, 'dist'));
  const unknown = (opts.only ?? []).filter((n) => !TARGETS.some((t) => t.name === n));
  if (unknown.length > 0) throw new Error(`unknown bundle ${unknown.join(', ')}; known: ${TARGETS.map((t) => t.name).join(', ')}`);
  const built = [];
  for (const target of TARGETS.filter((t) => !opts.only || opts.only.includes(t.name))) {
    const dir = join(outDir, target.name);
    const { metafile, copiedPackages } = await replaceWhole(dir, async (staged) => {
      const { metafile } = await build({
        absWorkingDir: repoRoot,
        entryPoints: { main: join(repoRoot, target.entry) },
        outdir: staged,
        outExtension: { '.js': '.mjs' },
        splitting: target.split,
        chunkNames: 'chunks/[name]-[hash]',
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node24',
        // Linked source map for `node --enable-source-maps`; without sources it is a third of the size.
        sourcemap: 'linked',
        sourcesContent: false,
        // Bundling renames clashing identifiers (Foo -> Foo2); keep the `.name` that errors and `err.name` checks show.
        keepNames: true,
        external: [...(target.external ?? []), ...OPTIONAL_REQUIRES],
        // An import esbuild cannot resolve inside a try/catch fails the build, not the container at run time.
        logOverride: { 'ignored-dynamic-import': 'error' },
        banner: { js: CJS_SHIM },
        metafile: true,
        legalComments: 'none',
      });
      const copiedPackages = copyExternals(target.external ?? [], repoRoot, staged);
      writeFileSync(join(staged, 'sources.json'), `${JSON.stringify(bundleSources(metafile))}\n`);
      return { metafile, copiedPackages };
    });
    const outputs = Object.entries(metafile.outputs).filter(([f]) => f.endsWith('.mjs'));
    built.push({ dir, bytes: outputs.reduce((sum, [, o]) => sum + o.bytes, 0), copiedPackages });
  }
  return built;
}

/**
 * Fills a directory beside `dir`, then puts it in place of `dir` by two renames: a process that starts from the bundle
 * while it is rebuilt (run-built.mjs) reads the old files or the new ones, never half a bundle. A failed fill changes nothing.
 */
export async function replaceWhole<T>(dir: string, fill: (staged: string) => Promise<T>): Promise<T> {
  const [staged, old] = [`${dir}.building-${process.pid}`, `${dir}.old-${process.pid}`];
  const remove = (d: string) => rmSync(d, { recursive: true, force: true });
  remove(staged);
  try {
    const result = await fill(staged);
    remove(old);
    if (existsSync(dir)) renameSync(dir, old);
    renameSync(staged, dir);
    return result;
  } finally {
    remove(staged);
    remove(old);
  }
}

/**
 * sources.json, the files `run-built.mjs` compares with the bundle's age: its workspace sources, their projects'
 * package.json, tsconfig.base.json and package-lock.json (which pins everything under node_modules).
 */
function bundleSources(meta: Metafile): string[] {
  const files = new Set(['package-lock.json', 'tsconfig.base.json']);
  for (const rel of Object.keys(meta.inputs)) {
    if (rel.startsWith('..') || rel.includes('node_modules/')) continue;
    files.add(rel);
    const project = /^((?:apps|libs|tools)\/[^/]+)\//.exec(rel);
    if (project) files.add(`${project[1]}/package.json`);
  }
  return [...files].sort();
}

/** Copies the externals and their production dependencies (`npm query`) into the bundle, nested as npm installed them. */
function copyExternals(externals: readonly string[], repoRoot: string, bundleDir: string): string[] {
  if (externals.length === 0) return [];
  const selector = externals.map((e) => `#${e}, #${e} .prod`).join(', ');
  const query = execFileSync('npm', ['query', selector], { cwd: repoRoot, encoding: 'utf8' });
  const found = JSON.parse(query) as { name: string; location: string }[];
  const packages = new Map(found.map((p) => [p.location, p.name]));
  for (const location of packages.keys()) {
    const ownModules = join(repoRoot, location, 'node_modules');
    // Nested node_modules are copied as packages of their own, only when something needs them.
    cpSync(join(repoRoot, location), join(bundleDir, location), {
      recursive: true,
      dereference: true,
      filter: (src) => src !== ownModules && !src.startsWith(ownModules + sep),
    });
  }
  return [...packages.values()].sort();
}
