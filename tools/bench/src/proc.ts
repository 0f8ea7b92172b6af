import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';

/** utime + stime of a process, in seconds (Linux /proc); NaN when it cannot be read. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds of several processes between `start()` and `stop()`, per wall second (1.0 = one core busy). */
export function cpuMeter(pids: Record<string, number>) {
  const t0 = performance.now();
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, pid === process.pid ? ownCpu() : cpuSeconds(pid)]));
  return {
    /** Per process: cores used on average, and CPU seconds in total. */
    stop(): Record<string, { cores: number; seconds: number }> {
      const wall = (performance.now() - t0) / 1000;
      return Object.fromEntries(
        Object.entries(pids).map(([k, pid]) => {
          const s = (pid === process.pid ? ownCpu() : cpuSeconds(pid)) - before[k]!;
          return [k, { cores: s / wall, seconds: s }];
        }),
      );
    },
  };
}

function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** `2 × AMD EPYC …, Node v20…; load average 3.1` — what the numbers were measured on. */
export function machineLine(): string {
  const cpu = cpus();
  return `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}; 1-minute load average ${loadavg()[0]!.toFixed(1)}`;
}
