import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { build, type Metafile } from 'esbuild';

/** One bundle: `dist/<name>/main.mjs` from a composition root. */
export interface BundleTarget {
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
  "import { fileURLToPath as __tallyFileURLToPath } from 'node:url';",
  "import { dirname as __tallyDirname } from 'node:path';",
  'const require = __tallyCreateRequire(import.meta.url);',
  'const __filename = __tallyFileURLToPath(import.meta.url);',
  'const __dirname = __tallyDirname(__filename);',
].join(' ');

export interface BuiltBundle {
  name: string;
  dir: string;
  /** Bytes of main.mjs (and its chunks). */
  bytes: number;
  /** Packages copied into the bundle's node_modules (externals and their dependencies). */
  copiedPackages: string[];
}

export interface BuildOptions {
  repoRoot: string;
  /** Default `<repoRoot>/dist`. */
  outDir?: string;
  /** Default every target. */
  only?: readonly string[];
}

/** Bundles each target into `<outDir>/<name>/main.mjs` (+ source map), replacing what was there. */
export async function buildBundles(opts: BuildOptions): Promise<BuiltBundle[]> {
  const repoRoot = resolve(opts.repoRoot);
  const outDir = resolve(opts.outDir ?? join(repoRoot, 'dist'));
  const targets = opts.only ? TARGETS.filter((t) => opts.only!.includes(t.name)) : TARGETS;
  const unknown = (opts.only ?? []).filter((n) => !TARGETS.some((t) => t.name === n));
  if (unknown.length > 0) throw new Error(`unknown bundle ${unknown.join(', ')}; known: ${TARGETS.map((t) => t.name).join(', ')}`);

  const built: BuiltBundle[] = [];
  for (const target of targets) {
    const dir = join(outDir, target.name);
    rmSync(dir, { recursive: true, force: true });
    const result = await build({
      absWorkingDir: repoRoot,
      ...(target.split
        ? {
            entryPoints: { main: join(repoRoot, target.entry) },
            outdir: dir,
            splitting: true,
            chunkNames: 'chunks/[name]-[hash]',
            outExtension: { '.js': '.mjs' },
          }
        : { entryPoints: [join(repoRoot, target.entry)], outfile: join(dir, 'main.mjs') }),
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
      // The optional requires stay run-time requires even when the package is installed here (the bench uses pg).
      external: [...(target.external ?? []), ...OPTIONAL_REQUIRES],
      banner: { js: CJS_SHIM },
      metafile: true,
      logLevel: 'warning',
      legalComments: 'none',
    });
    const copiedPackages = copyExternals(target.external ?? [], repoRoot, dir);
    checkNoStrayExternals(result.metafile, target);
    writeFileSync(join(dir, SOURCES_FILE), `${JSON.stringify(bundleSources(result.metafile, repoRoot))}\n`);
    const bytes = Object.keys(result.metafile.outputs)
      .filter((f) => f.endsWith('.mjs'))
      .reduce((sum, f) => sum + statSync(resolve(repoRoot, f)).size, 0);
    built.push({ name: target.name, dir, bytes, copiedPackages });
  }
  return built;
}

/** Next to each bundle: the files it was built from, which `run-built.mjs` compares with the bundle's age. */
const SOURCES_FILE = 'sources.json';

/**
 * The repository files a bundle depends on (relative to the root): its workspace sources (from esbuild's metafile),
 * the package.json of each project they belong to, tsconfig.base.json and package-lock.json (which pins everything
 * under node_modules). A bundle older than any of them is stale.
 */
function bundleSources(meta: Metafile, repoRoot: string): string[] {
  const files = new Set(['package-lock.json', 'tsconfig.base.json']);
  for (const input of Object.keys(meta.inputs)) {
    const rel = relative(repoRoot, resolve(repoRoot, input)).split(sep).join('/');
    if (rel.startsWith('..') || rel.includes('node_modules/')) continue;
    files.add(rel);
    const project = rel.match(/^((?:apps|libs|tools)\/[^/]+)\//);
    if (project) files.add(`${project[1]}/package.json`);
  }
  return [...files].sort();
}

/**
 * Packages required only inside a try/catch by a dependency when a feature Tally does not use is configured;
 * esbuild leaves such requires to run time and they fail softly. BullMQ's alternative backends (Tally uses ioredis).
 */
const OPTIONAL_REQUIRES: readonly string[] = ['@valkey/valkey-glide', 'pg'];

/**
 * Every import esbuild left unresolved must be a node builtin, a declared external (copied next to the bundle) or a
 * known optional require, so a new dependency that esbuild cannot follow fails the build instead of the container.
 */
function checkNoStrayExternals(meta: Metafile, target: BundleTarget): void {
  const allowed = new Set([...(target.external ?? []), ...OPTIONAL_REQUIRES]);
  for (const output of Object.values(meta.outputs)) {
    for (const imp of output.imports) {
      if (!imp.external) continue;
      if (imp.path.startsWith('node:') || isBuiltin(imp.path)) continue;
      if (![...allowed].some((e) => imp.path === e || imp.path.startsWith(`${e}/`))) {
        throw new Error(`${target.name}: "${imp.path}" is not bundled and not declared external`);
      }
    }
  }
}

function isBuiltin(path: string): boolean {
  return builtinModules.includes(path) || builtinModules.includes(path.split('/')[0]!);
}

/**
 * Copies each external package and the transitive closure of its `dependencies` and `optionalDependencies`
 * (as Node would resolve them from the repository's node_modules) into `<bundleDir>/node_modules`, keeping the
 * nesting so every package resolves the same version it resolves in the repository.
 */
export function copyExternals(externals: readonly string[], repoRoot: string, bundleDir: string): string[] {
  const seen = new Map<string, string>(); // package dir (absolute, in the repo) -> name
  const visit = (name: string, fromDir: string, optional: boolean): void => {
    const pkgDir = resolvePackageDir(name, fromDir, repoRoot);
    if (!pkgDir) {
      if (optional) return;
      throw new Error(`cannot copy "${name}": not installed (resolved from ${relative(repoRoot, fromDir) || '.'}); run npm ci`);
    }
    if (seen.has(pkgDir)) return;
    seen.set(pkgDir, name);
    const manifest = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
    };
    for (const dep of Object.keys(manifest.dependencies ?? {})) visit(dep, pkgDir, Boolean(manifest.optionalDependencies?.[dep]));
    for (const dep of Object.keys(manifest.optionalDependencies ?? {})) visit(dep, pkgDir, true);
  };
  for (const name of externals) visit(name, repoRoot, false);

  for (const pkgDir of seen.keys()) {
    const rel = relative(repoRoot, pkgDir); // node_modules/a or node_modules/a/node_modules/b
    const dest = join(bundleDir, rel);
    mkdirSync(dirname(dest), { recursive: true });
    const ownModules = join(pkgDir, 'node_modules');
    cpSync(pkgDir, dest, {
      recursive: true,
      dereference: true,
      // Nested node_modules are copied as packages of their own, only when something needs them.
      filter: (src) => src !== ownModules && !src.startsWith(ownModules + sep),
    });
  }
  return [...seen.values()].sort();
}

/** Node's lookup: `<dir>/node_modules/<name>` for `fromDir` and each parent up to the repository root. */
function resolvePackageDir(name: string, fromDir: string, repoRoot: string): string | undefined {
  for (let dir = fromDir; dir.startsWith(repoRoot); dir = dirname(dir)) {
    if (basename(dir) === 'node_modules') continue;
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dir === repoRoot) break;
  }
  return undefined;
}

/** A one-line summary per bundle, for the build log. */
export function describeBundles(built: readonly BuiltBundle[], repoRoot: string): string[] {
  return built.map((b) => {
    const mb = (b.bytes / 1024 / 1024).toFixed(1);
    const extra =
      b.copiedPackages.length > 0 ? ` + node_modules (${b.copiedPackages.length} packages: ${b.copiedPackages.join(', ')})` : '';
    const file = join(b.dir, 'main.mjs');
    const shown = file.startsWith(repoRoot) ? relative(repoRoot, file) : file;
    return `${shown}  ${mb} MB${extra}`;
  });
}
