import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { replaceWhole } from './build';

let root: string;
let dir: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'tally-replace-whole-'));
  dir = join(root, 'app');
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const bundle = (text: string) => {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'main.mjs'), text);
};
const read = () => readFileSync(join(dir, 'main.mjs'), 'utf8');

describe('replaceWhole (a bundle rebuilt while processes start from it)', () => {
  it('keeps the old bundle whole while the new one is written, then puts the new one in its place', async () => {
    bundle('old');
    const seen: string[] = [];
    const r = await replaceWhole(dir, async (staged) => {
      mkdirSync(staged);
      writeFileSync(join(staged, 'main.mjs'), 'ne');
      seen.push(read());
      await new Promise((resolve) => setTimeout(resolve, 20));
      writeFileSync(join(staged, 'main.mjs'), 'new');
      seen.push(read());
      return 42;
    });
    expect(r).toBe(42);
    expect(seen).toEqual(['old', 'old']);
    expect(read()).toBe('new');
    expect(readdirSync(root)).toEqual(['app']);
  });

  it('builds a bundle that was not there', async () => {
    await replaceWhole(dir, async (staged) => {
      mkdirSync(staged);
      writeFileSync(join(staged, 'main.mjs'), 'first');
    });
    expect(read()).toBe('first');
    expect(readdirSync(root)).toEqual(['app']);
  });

  it('leaves the old bundle as it was when the build fails, and nothing half built beside it', async () => {
    bundle('old');
    const failing = replaceWhole(dir, async (staged) => {
      mkdirSync(staged);
      writeFileSync(join(staged, 'main.mjs'), 'half');
      throw new Error('build failed');
    });
    await expect(failing).rejects.toThrow('build failed');
    expect(read()).toBe('old');
    expect(readdirSync(root)).toEqual(['app']);
    expect(existsSync(join(dir, 'main.mjs'))).toBe(true);
  });
});
