// The output lines of the stack's children as one stream, each prefixed with its source: pino JSON lines (and
// redis-server's, read as pino's) prettified by pino-pretty; any other line as it is.
import { prettyFactory } from 'pino-pretty';

export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
export const PINO_LEVEL: Record<Level, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** `pid:role dd Mon yyyy hh:mm:ss.mmm <mark> message`, redis-server's log format, and its signal handler's lines. */
const REDIS_LINE = /^\d+:(?:[XCSM] \d{1,2} \w{3} \d{4} [\d:.]+ ([.\-*#])|signal-handler \(\d+\)) (.*)$/;
/** redis-server logs everything from start-up banners to real problems with `#`. */
const REDIS_TROUBLE = /warn|error|fail|can(no|')t|unable|refus|corrupt/i;

/** A redis-server log line as a pino record (its own pid and clock dropped); any other line unchanged. */
function asPino(line: string): string | { level: number; time: number; msg: string } {
  const m = REDIS_LINE.exec(line);
  if (!m) return line;
  const [, mark = '*', msg = ''] = m;
  const level = PINO_LEVEL[mark === '#' ? (REDIS_TROUBLE.test(msg) ? 'warn' : 'info') : mark === '*' ? 'info' : 'debug'];
  return { level, time: Date.now(), msg };
}

const options = { ignore: 'pid,hostname,name', singleLine: true, errorLikeObjectKeys: ['err', 'error'] };

/** Formats the lines of every source with its name padded to `nameWidth`, in colour when asked. */
export function lineFormatter(f: { color: boolean; nameWidth: number }) {
  const pretty = prettyFactory({ ...options, colorize: f.color, translateTime: 'SYS:HH:MM:ss.l' });
  const line = (source: string, text: string | { level: number; time: number; msg: string }) =>
    pretty(typeof text === 'string' ? asPino(text) : text)
      .trimEnd()
      .split('\n')
      .map((l) => `${source.padEnd(f.nameWidth)} | ${l.trimEnd()}`)
      .join('\n');
  return { line, say: (source: string, level: Level, msg: string) => line(source, { level: PINO_LEVEL[level], time: Date.now(), msg }) };
}

const bare = prettyFactory({ ...options, colorize: false, ignore: `${options.ignore},time` });

/** A line without time and source, for a crash report that quotes lines already shown. */
export function formatBare(line: string): string {
  return bare(asPino(line)).trimEnd();
}
