import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceStartError, WaitTimeoutError, isAlive, procStat, readProc, startProcess, waitFor } from './index';

const node = process.execPath;
const fixture = new URL('../test/fixtures/leave-children.ts', import.meta.url).pathname;

describe('startProcess', () => {
  it('collects stdout and stderr lines and reports the exit code', async () => {
    const p = await startProcess(node, ['-e', 'console.log("one"); console.error("two"); process.stdout.write("three"); process.exit(3)'], {
      name: 'printer',
    });
    expect(await p.exited).toEqual({ code: 3, signal: null });
    expect(p.exit).toEqual({ code: 3, signal: null });
    const out = p.output().split('\n').sort();
    expect(out).toEqual(['[stderr] two', 'one', 'three']);
  });

  it('passes env on top of the inherited environment', async () => {
    const p = await startProcess(node, ['-e', 'console.log(process.env.TALLY_T_A + "/" + typeof process.env.PATH)'], {
      env: { TALLY_T_A: 'x1' },
    });
    await p.exited;
    expect(p.output()).toBe('x1/string');
  });

  it('waitForLine returns the match, also for lines printed before the call', async () => {
    const p = await startProcess(node, ['-e', 'console.log("listening on port 4242"); setInterval(() => {}, 1000)'], { name: 'srv' });
    const m = await p.waitForLine(/listening on port (\d+)/);
    expect(m[1]).toBe('4242');
    // Again, after the fact: the buffer still holds it.
    expect((await p.waitForLine(/port (\d+)/))[1]).toBe('4242');
    await expect(p.waitForLine(/port/, { fromNow: true, timeoutMs: 200 })).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(await p.kill()).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('waitForLine rejects with the output when the process exits first', async () => {
    const p = await startProcess(node, ['-e', 'console.error("boom: bad config"); process.exit(1)'], { name: 'crasher' });
    const err = await p.waitForLine(/ready/).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceStartError);
    expect((err as Error).message).toMatch(/^crasher exited with code 1 before printing a line matching \/ready\//);
    expect((err as Error).message).toContain('[stderr] boom: bad config');
  });

  it('waitForLine times out with the last output', async () => {
    const p = await startProcess(node, ['-e', 'console.log("starting"); setInterval(() => {}, 1000)'], { name: 'slow' });
    // However slowly it starts, "starting" is in the output before the wait that must time out begins.
    await p.waitForLine(/starting/);
    const err = await p.waitForLine(/ready/, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect((err as Error).message).toBe('slow printed no line matching /ready/ within 300ms; last output:\nstarting');
    await p.kill('SIGKILL');
  });

  it('keeps only the last bufferLines lines', async () => {
    const p = await startProcess(node, ['-e', 'for (let i = 0; i < 100; i++) console.log("line " + i)'], { bufferLines: 3 });
    await p.exited;
    expect(p.output()).toBe('line 97\nline 98\nline 99');
  });

  it('kill escalates to SIGKILL when the signal is ignored', async () => {
    const p = await startProcess(node, ['-e', 'process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1000)']);
    await p.waitForLine(/up/);
    expect(await p.kill('SIGTERM', { timeoutMs: 300 })).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('kill takes the whole process group, grandchildren included', async () => {
    const script =
      'const c = require("child_process").spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });' +
      'console.log("grandchild " + c.pid); setInterval(() => {}, 1000)';
    const p = await startProcess(node, ['-e', script]);
    const pid = Number((await p.waitForLine(/grandchild (\d+)/))[1]);
    expect(isAlive(pid)).toBe(true);
    await p.kill('SIGTERM');
    await waitFor(() => !isAlive(pid), { timeoutMs: 5_000, message: `grandchild ${pid} to die` });
  });

  it('says when the command does not exist', async () => {
    await expect(startProcess('tally-no-such-binary', [], { name: 'ghost' })).rejects.toThrow(
      'cannot start ghost: "tally-no-such-binary" was not found on PATH',
    );
  });

  it.each(['exit', 'hang'])('leaves no orphans or temp dirs when the test process ends (%s)', async (how) => {
    const parent = await startProcess(node, ['--import', 'tsx', fixture, how], { name: `parent-${how}` });
    // tsx, a child and a redis-server start in turn: on a loaded machine that can take longer than the default wait.
    const [, child, redis, dir] = await parent.waitForLine(/child (\d+) redis (\d+) dir (\S+)/, { timeoutMs: 40_000 });
    const pids = [Number(child), Number(redis)];
    if (how === 'hang') {
      expect(pids.map((p) => isAlive(p))).toEqual([true, true]);
      expect(existsSync(dir!)).toBe(true);
      // SIGKILL runs no exit handler: only the watchdog can clean up.
      process.kill(parent.pid, 'SIGKILL');
    }
    await parent.exited;
    await waitFor(() => pids.every((p) => !isAlive(p)) && !existsSync(dir!), {
      timeoutMs: 15_000,
      message: `children ${pids.join(', ')} of a dead test process to die and ${dir} to go`,
    });
  });
});

describe('startProcess options for launchers', () => {
  it('hands every line to onLine as it arrives', async () => {
    const seen: string[] = [];
    const p = await startProcess(node, ['-e', 'console.log("a"); console.error("b")'], {
      onLine: (text, stream) => seen.push(`${stream}:${text}`),
    });
    await p.exited;
    expect(seen.sort()).toEqual(['stderr:b', 'stdout:a']);
  });

  it('with reap: false, a child outlives the process that started it', async () => {
    const script = `import('${new URL('./index.ts', import.meta.url).pathname}').then(async (t) => {
      const p = await t.startProcess('sleep', ['30'], { reap: false });
      console.log(p.pid);
      process.exit(0);
    })`;
    const parent = await startProcess(node, ['--import', 'tsx', '-e', script]);
    const pid = Number((await parent.waitForLine(/^\d+$/))[0]);
    await parent.exited;
    try {
      expect(isAlive(pid)).toBe(true);
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });
});

const children: ReturnType<typeof spawn>[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

describe('isAlive', () => {
  it('is true for a running process, false once it is gone', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    children.push(child);
    expect(isAlive(child.pid!)).toBe(true);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    expect(isAlive(child.pid!)).toBe(false);
  });

  it('does not count a zombie (dead, never reaped by its parent) as alive', async () => {
    // The forked child exits at once; its parent never waits for it (perl, Debian's essential perl-base). A shell that
    // execs `sleep 30` after `sleep 0 &` could reap its child first, on a loaded machine, before the exec.
    const parent = spawn('perl', ['-e', '$| = 1; my $pid = fork; exit 0 unless $pid; print "$pid\n"; sleep 30'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    children.push(parent);
    const zombie = Number(await new Promise<string>((r) => parent.stdout!.once('data', (d: Buffer) => r(d.toString()))));
    await waitFor(() => !isAlive(zombie), { message: `pid ${zombie} to be a zombie` });
    expect(() => process.kill(zombie, 0)).not.toThrow(); // the pid still exists…
    expect(isAlive(zombie)).toBe(false); // …but nothing runs
    expect(isAlive(parent.pid!)).toBe(true);
  });
});

describe('procStat and readProc', () => {
  it("read a process's /proc files: the stat fields after its name (whatever the name holds), its status", async () => {
    // A command name (the file's: here a link's) with spaces and a `)`: the fields are those after the last `)`.
    const dir = mkdtempSync(path.join(tmpdir(), 'proc-'));
    symlinkSync(execFileSync('sh', ['-c', 'command -v sleep']).toString().trim(), path.join(dir, 'odd ) x'));
    const child = spawn(path.join(dir, 'odd ) x'), ['30'], { stdio: 'ignore' });
    children.push(child);
    await waitFor(() => readProc(child.pid!, 'status')?.includes('\nVmRSS:'), { message: 'sleep to run' });
    rmSync(dir, { recursive: true });
    const fields = procStat(child.pid!)!;
    expect(fields[0]).toMatch(/^[RSD]$/); // the state
    expect([fields[1], fields[11], fields[12]].map((f) => Number.isInteger(Number(f)))).toEqual([true, true, true]); // ppid, utime, stime
    expect(Number(fields[1])).toBe(process.pid);
    expect(readProc(child.pid!, 'stat')).toMatch(/^\d+ \(odd \) x\) /);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    expect([procStat(child.pid!), readProc(child.pid!, 'status')]).toEqual([undefined, undefined]);
  });
});
