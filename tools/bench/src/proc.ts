import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';

/**
 * utime + stime of a process, in seconds (Linux /proc), or with `children` cutime + cstime (of the children it waited
 * for); NaN when it cannot be read.
 */
export function cpuSeconds(pid: number | 'self', children = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const at = children ? 13 : 11;
    return (Number(fields[at]) + Number(fields[at + 1])) / 100;
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
