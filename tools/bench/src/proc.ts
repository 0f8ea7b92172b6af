import { cpus, loadavg } from 'node:os';
import { procStat } from '@tally/testing';
import { mapValues, sum } from './stats';

/** utime + stime of a process, in seconds (Linux /proc; this process's own to the microsecond); NaN when it cannot be read. */
export function cpuSeconds(pid: number): number {
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
  const fields = procStat(pid);
  return fields ? (Number(fields[11]) + Number(fields[12])) / 100 : Number.NaN;
}

/**
 * CPU of named processes (a pid, or several summed) from now until `stop()`: CPU seconds in total, and cores used
 * on average (CPU seconds per wall second: 1.0 = one core busy).
 */
export function cpuMeter<K extends string>(pids: Record<K, number | readonly number[]>) {
  const read = () => mapValues(pids, (p) => sum([p].flat().map((pid) => cpuSeconds(pid))));
  const [t0, before] = [performance.now(), read()];
  return {
    stop() {
      const wall = (performance.now() - t0) / 1000;
      return mapValues(read(), (s, k) => ({ cores: (s - before[k]) / wall, seconds: s - before[k] }));
    },
  };
}

/** `2 × AMD EPYC …, Node v20…; load average 3.1` — what the numbers were measured on. */
export function machineLine(): string {
  const cpu = cpus();
  return `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}; 1-minute load average ${loadavg()[0]!.toFixed(1)}`;
}
