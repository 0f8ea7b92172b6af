import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { beforeAll, describe, expect, it } from 'vitest';

// The module-boundary rule (eslint.config.mjs) must turn each forbidden import into a lint error. Linted as
// virtual files, so nothing is written into the tree.
const root = fileURLToPath(new URL('../../../', import.meta.url));
let eslint: ESLint;

beforeAll(() => {
  // The rule reads Nx's project graph; make sure it exists (as `npm run lint` does).
  execFileSync(process.execPath, [`${root}node_modules/nx/dist/bin/nx.js`, 'show', 'projects'], {
    cwd: root,
    env: { ...process.env, NX_DAEMON: 'false' },
    stdio: 'ignore',
  });
  eslint = new ESLint({ cwd: root });
}, 120_000);

async function boundaryErrors(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${root}${file}` });
  return result!.messages.filter((m) => m.ruleId === '@nx/enforce-module-boundaries').map((m) => m.message);
}

describe('project boundaries', () => {
  it('an app importing another app is a lint error', async () => {
    expect(await boundaryErrors('apps/collector/src/probe.ts', "import '@tally/query-api';\n")).not.toEqual([]);
  });
  it('a shared lib importing an app is a lint error', async () => {
    expect(await boundaryErrors('libs/schema/src/probe.ts', "import '@tally/collector';\n")).not.toEqual([]);
  });
  it('an app importing a tool library is a lint error', async () => {
    expect(await boundaryErrors('apps/dynamo-writer/src/probe.ts', "import '@tally/loadgen';\n")).not.toEqual([]);
  });
  it('an app importing a shared lib is fine', async () => {
    expect(await boundaryErrors('apps/collector/src/probe.ts', "import '@tally/schema';\n")).toEqual([]);
  });
});
