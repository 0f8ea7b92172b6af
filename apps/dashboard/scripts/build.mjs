#!/usr/bin/env node
// Builds the dashboard into apps/dashboard/dist with Vite.
//
//   node apps/dashboard/scripts/build.mjs             build now (`npm run build:dashboard`, and `postinstall`)
//   node apps/dashboard/scripts/build.mjs --if-stale  build only when dist is missing or was built from other
//                                                     sources (`prestart`, and the browser test)
//
// "Other sources" is decided by content, not by timestamps: a sha256 over the inputs (index.html, src/ without
// tests, the query API's contract in libs/contracts/src, the Vite config, package.json, and the versions of vite,
// uplot and zod) is kept in dist/.build-inputs.sha256.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const stampFile = path.join(dist, '.build-inputs.sha256');
const require = createRequire(path.join(root, 'package.json'));

/** Files the build reads, relative to apps/dashboard, sorted (the contract lib's sources are bundled too). */
function inputFiles() {
  const files = ['index.html', 'vite.config.ts', 'package.json'];
  for (const dir of ['src', '../../libs/contracts/src'])
    for (const rel of readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' }))
      if (!/\.test\.ts$/.test(rel) && statSync(path.join(root, dir, rel)).isFile()) files.push(path.posix.join(dir, rel));
  return files.sort();
}

/** @param {string} pkg */
function versionOf(pkg) {
  try {
    return JSON.parse(readFileSync(require.resolve(`${pkg}/package.json`), 'utf8')).version;
  } catch {
    return 'missing';
  }
}

function inputsHash() {
  const hash = createHash('sha256');
  for (const file of inputFiles())
    hash
      .update(`${file}\0`)
      .update(readFileSync(path.join(root, file)))
      .update('\0');
  for (const pkg of ['vite', 'uplot', 'zod']) hash.update(`${pkg}@${versionOf(pkg)}\0`);
  return hash.digest('hex');
}

const ifStale = process.argv.includes('--if-stale');
const wanted = inputsHash();
if (ifStale && existsSync(path.join(dist, 'index.html')) && existsSync(stampFile) && readFileSync(stampFile, 'utf8').trim() === wanted) {
  process.exit(0);
}

let vite;
try {
  vite = await import(require.resolve('vite'));
} catch (err) {
  process.stderr.write(
    `dashboard: cannot load vite (${/** @type {Error} */ (err).message}); run \`npm install\` at the repository root first\n`,
  );
  process.exit(1);
}

const started = Date.now();
try {
  await vite.build({ root, configFile: path.join(root, 'vite.config.ts'), logLevel: 'warn' });
} catch (err) {
  process.stderr.write(`dashboard: the build failed: ${/** @type {Error} */ (err).message}\n`);
  process.exit(1);
}
writeFileSync(stampFile, `${wanted}\n`);
process.stdout.write(`dashboard: built ${path.relative(process.cwd(), dist) || '.'} in ${Date.now() - started} ms\n`);
