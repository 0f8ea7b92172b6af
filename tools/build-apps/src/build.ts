import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { build, type Metafile } from 'esbuild';

/** One bundle: `dist/<name>/main.mjs` from a composition root. */
interface BundleTarget {
  name: string;
  /** Entry file, relative to the repository root. */
  entry: string;
  /**
   * Packages left out of the bundle because they cannot be bundled (they read files next to their own sources at
   * run time). Each is copied, with its production dependencies, into `dist/<name>/node_modules`.
   */
  external?: readonly string[];
  /**
   * Split at dynamic imports (esbuild code splitting): `main.mjs` plus `chunks/*.mjs` loaded when first imported,
   * so a command loads only the code it runs (`--help` of an operator tool loads no SDK). Default false: one file.
   */
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

/**
 * ESM bundles of CommonJS packages need `require`, `__filename` and `__dirname`; esbuild's ESM output has none.
 * Names are the CommonJS ones on purpose: bundled CJS code refers to them as free variables.
 */
const CJS_SHIM = [
  "import { createRequire as __tallyCreateRequire } from 'node:module';",
  'const require = __tallyCreateRequire(import.meta.url);',
  'const __filename = import.meta.filename;',
  'const __dirname = import.meta.dirname;',
].join(' ');

/**
 * Packages required only inside a try/catch by a dependency when a feature Tally does not use is configured: BullMQ's
 * alternative backends (Tally uses ioredis). Any other import esbuild cannot resolve fails the build (below).
 */
const OPTIONAL_REQUIRES: readonly string[] = ['@valkey/valkey-glide', 'pg'];

/**
 * Bundles each target (default: every one) into `<outDir>/<name>/main.mjs` (+ source map), put in place whole
 * (replaceWhole). Returns each bundle's directory, the bytes of main.mjs and its chunks, and the packages copied
 * into its node_modules (externals and their dependencies).
 */
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
        // Bundling renames clashing identifiers (Foo -> Foo2); keep `.name` of classes and functions, which error
        // messages, pino's `err.type` and `err.name` checks rely on.
        keepNames: true,
        external: [...(target.external ?? []), ...OPTIONAL_REQUIRES],
        // An import esbuild cannot resolve inside a try/catch is left to run time by default; here it fails the
        // build, so a new dependency that esbuild cannot follow fails the build instead of the container.
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
 * Fills a directory beside `dir` (`fill`), then puts it in place of `dir` whole by two renames: a process that starts
 * from the old bundle while it is rebuilt (run-built.mjs) reads the old files or the new ones, never a bundle half
 * written. A fill that throws leaves `dir` as it was.
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
 * Next to each bundle, sources.json: the repository files it was built from, which `run-built.mjs` compares with
 * the bundle's age. Its workspace sources (from esbuild's metafile), the package.json of each project they belong
 * to, tsconfig.base.json and package-lock.json (which pins everything under node_modules).
 */
function bundleSources(meta: Metafile): string[] {
  const files = new Set(['package-lock.json', 'tsconfig.base.json']);
  for (const rel of Object.keys(meta.inputs)) {
    // Relative to absWorkingDir (the repository), with forward slashes.
    if (rel.startsWith('..') || rel.includes('node_modules/')) continue;
    files.add(rel);
    const project = /^((?:apps|libs|tools)\/[^/]+)\//.exec(rel);
    if (project) files.add(`${project[1]}/package.json`);
  }
  return [...files].sort();
}

/**
 * Copies each external package and its production dependencies, as npm installed them (`npm query`), into
 * `<bundleDir>/node_modules`, keeping the nesting so every package resolves the version it resolves in the repository.
 */
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
