import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isAlive } from '@tally/testing';
import { RunFile } from './run-file';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tally-runfile-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const write = (state: object) => writeFileSync(path.join(dir, 'stack.json'), JSON.stringify(state));

describe('RunFile', () => {
  it('records the children of this stack and removes the file', async () => {
    const f = new RunFile(dir, 123);
    expect(await f.claim(() => '')).toEqual([]);
    f.update({ children: { redis: { pid: 456, match: 'redis-server' } } });
    expect(f.read()).toMatchObject({ stackPid: 123, children: { redis: { pid: 456, match: 'redis-server' } } });
    f.remove();
    expect(f.read()).toBeUndefined();
  });

  it('is readable by its owner only: the backends hold REDIS_URL with its password', async () => {
    const f = new RunFile(dir, 123);
    await f.claim(() => '');
    f.update({ backends: { redisUrl: 'redis://:s3cret@10.0.0.5:6379', dynamoEndpoint: '', table: 't', region: 'r', collectorUrl: '' } });
    expect(statSync(f.file).mode & 0o777).toBe(0o600);
  });

  it('refuses to share the data directory with a live stack', async () => {
    write({ stackPid: process.pid, startedAt: '', children: {} });
    const f = new RunFile(dir, 999_999_999);
    await expect(f.claim(() => 'node tools/stack/src/main.ts')).rejects.toMatchObject({ code: 'TALLY_ERR_STACK_RUNNING' });
    // A live pid that is not a stack any more (reused) does not block.
    expect(await new RunFile(dir, 999_999_999).claim(() => 'vim')).toEqual([]);
  });

  it('stops the leftovers of a dead stack whose command line still matches, and only those', async () => {
    const leftover = spawn('sleep', ['30'], { stdio: 'ignore' });
    const bystander = spawn('sleep', ['30'], { stdio: 'ignore' });
    const exited = new Promise((r) => leftover.once('exit', r));
    try {
      write({
        stackPid: 999_999_999,
        startedAt: '',
        children: { redis: { pid: leftover.pid, match: 'leftover-marker' }, collector: { pid: bystander.pid, match: 'apps/collector' } },
      });
      const cmdline = (pid: number) => (pid === leftover.pid ? 'sleep leftover-marker' : 'sleep 30');
      const notes = await new RunFile(dir).claim(cmdline);
      expect(notes).toEqual([`stopped redis (pid ${leftover.pid}) left running by a previous stack that did not shut down`]);
      await exited;
      expect(isAlive(bystander.pid!)).toBe(true);
    } finally {
      leftover.kill('SIGKILL');
      bystander.kill('SIGKILL');
    }
  });
});
