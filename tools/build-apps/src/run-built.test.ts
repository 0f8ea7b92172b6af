import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '@tally/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

// run-built.mjs in a repository of its own, whose build (tools/build-apps/src/main.ts) takes half a second to write
// dist/<name>/main.mjs: the tests' fleets start several apps from their bundles at once, so a bundle that is not
// built yet must be built once, by one of them, while the others wait for it.
const FAKE_BUILD = `import { mkdirSync, writeFileSync } from 'node:fs';
const name = process.argv[process.argv.indexOf('--only') + 1];
if (name === 'broken') {
  process.stderr.write('build failed\\n');
  process.exit(3);
}
await new Promise((resolve) => setTimeout(resolve, 500));
mkdirSync(\`dist/\${name}\`, { recursive: true });
writeFileSync(\`dist/\${name}/main.mjs\`, "console.log('ran', process.argv.slice(2).join(' '));\\n");
writeFileSync(\`dist/\${name}/sources.json\`, JSON.stringify(['package.json']));
`;

let repo: string;
beforeEach(() => {
  repo = mkdtempSync(join(tmpdir(), 'tally-run-built-'));
  mkdirSync(join(repo, 'tools', 'build-apps', 'src'), { recursive: true });
  copyFileSync(join(REPO_ROOT, 'tools', 'build-apps', 'run-built.mjs'), join(repo, 'tools', 'build-apps', 'run-built.mjs'));
  writeFileSync(join(repo, 'tools', 'build-apps', 'src', 'main.ts'), FAKE_BUILD);
  writeFileSync(join(repo, 'package.json'), '{ "type": "module" }\n');
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(repo, 'node_modules'));
});
afterEach(() => rmSync(repo, { recursive: true, force: true }));

function run(name = 'app'): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['tools/build-apps/run-built.mjs', name, 'one', 'two'], { cwd: repo });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => void (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

const builds = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('tally: building app')).length;

describe('run-built.mjs', () => {
  it('builds a missing bundle once when several processes start from it at the same time, then runs it in each', async () => {
    const runs = await Promise.all([run(), run(), run()]);
    for (const r of runs) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('ran one two\n');
    }
    expect(runs.map((r) => builds(r.stderr))).toContain(1);
    expect(runs.map((r) => builds(r.stderr)).reduce((a, b) => a + b)).toBe(1);
    expect(existsSync(join(repo, 'dist', '.app.lock'))).toBe(false);
    expect(await run()).toEqual({ code: 0, stdout: 'ran one two\n', stderr: '' });
  });

  it('takes over the lock of a builder that died', async () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    mkdirSync(join(repo, 'dist', '.app.lock'), { recursive: true });
    writeFileSync(join(repo, 'dist', '.app.lock', 'pid'), String(dead));
    const r = await run();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('ran one two\n');
    expect(builds(r.stderr)).toBe(1);
    expect(existsSync(join(repo, 'dist', '.app.lock'))).toBe(false);
  });

  it('exits with the status of a build that fails, leaving no lock behind', async () => {
    const r = await run('broken');
    expect(r).toEqual({ code: 3, stdout: '', stderr: 'tally: building broken (not built yet)\nbuild failed\n' });
    expect(existsSync(join(repo, 'dist', '.broken.lock'))).toBe(false);
  });
});
