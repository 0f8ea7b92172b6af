/**
 * Turns the output lines of the stack's children into one readable, prefixed stream.
 * pino JSON lines become `time LEVEL app | msg key=value`; any other line is kept as it is.
 */

export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

const PINO_LEVELS: Record<number, Level> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
const COLORS: Record<Level, string> = {
  trace: '\x1b[90m',
  debug: '\x1b[36m',
  info: '\x1b[32m',
  warn: '\x1b[33m',
  error: '\x1b[31m',
  fatal: '\x1b[41m\x1b[97m',
};
const SOURCE_COLORS = ['\x1b[34m', '\x1b[35m', '\x1b[36m', '\x1b[33m', '\x1b[32m', '\x1b[94m', '\x1b[95m'];
const RESET = '\x1b[0m';
const DIM = '\x1b[2m';
/** pino's own bookkeeping fields, not worth a column. */
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'v']);

export interface LineFormat {
  color: boolean;
  /** Width the source name is padded to, so messages line up. */
  nameWidth: number;
}

export interface ParsedLine {
  time: Date;
  level?: Level;
  msg: string;
  fields: Record<string, unknown>;
  /** Stack traces of `err`/`error` fields, printed below the line. */
  stacks: string[];
}

/** `pid:role dd Mon yyyy hh:mm:ss.mmm <mark> message`, redis-server's log format. */
const REDIS_LINE = /^\d+:[XCSM] \d{1,2} \w{3} \d{4} [\d:.]+ ([.\-*#]) (.*)$/;
const REDIS_SIGNAL_LINE = /^\d+:signal-handler \(\d+\) (.*)$/;
/** redis-server logs everything from start-up banners to real problems with `#`. */
const REDIS_TROUBLE = /warn|error|fail|can(no|')t|unable|refus|corrupt/i;

/**
 * Parses a pino JSON line or a redis-server log line (its own pid and clock dropped); anything else
 * (stack traces, plain text) is kept verbatim.
 */
export function parseLine(line: string, now: Date = new Date()): ParsedLine {
  const trimmed = line.trim();
  if (trimmed.startsWith('{') && trimmed.endsWith('}')) {
    try {
      const obj = JSON.parse(trimmed) as Record<string, unknown>;
      if (typeof obj === 'object' && obj !== null && ('level' in obj || 'msg' in obj)) return fromPino(obj, now);
    } catch {
      // not JSON after all: fall through
    }
  }
  const redis = REDIS_LINE.exec(line);
  if (redis) {
    const [, mark, msg = ''] = redis;
    const level: Level = mark === '#' ? (REDIS_TROUBLE.test(msg) ? 'warn' : 'info') : mark === '*' ? 'info' : 'debug';
    return { time: now, level, msg, fields: {}, stacks: [] };
  }
  const signal = REDIS_SIGNAL_LINE.exec(line);
  if (signal) return { time: now, level: 'info', msg: signal[1] ?? '', fields: {}, stacks: [] };
  return { time: now, msg: line, fields: {}, stacks: [] };
}

function fromPino(obj: Record<string, unknown>, now: Date): ParsedLine {
  const level = typeof obj['level'] === 'number' ? PINO_LEVELS[obj['level']] : isLevel(obj['level']) ? obj['level'] : undefined;
  const t = obj['time'];
  const time = typeof t === 'number' || typeof t === 'string' ? new Date(t) : now;
  const fields: Record<string, unknown> = {};
  const stacks: string[] = [];
  for (const [key, value] of Object.entries(obj)) {
    if (HIDDEN.has(key)) continue;
    if ((key === 'err' || key === 'error') && isErrorLike(value)) {
      stacks.push(value.stack);
      fields[key] = value.message ?? value.type ?? 'error';
      continue;
    }
    fields[key] = value;
  }
  return {
    time: Number.isNaN(time.getTime()) ? now : time,
    ...(level ? { level } : {}),
    msg: typeof obj['msg'] === 'string' ? obj['msg'] : '',
    fields,
    stacks,
  };
}

function isLevel(v: unknown): v is Level {
  return typeof v === 'string' && v in COLORS;
}

function isErrorLike(v: unknown): v is { stack: string; message?: string; type?: string } {
  return typeof v === 'object' && v !== null && typeof (v as { stack?: unknown }).stack === 'string';
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

function clock(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function sourceColor(source: string): string {
  let h = 0;
  for (const ch of source) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return SOURCE_COLORS[h % SOURCE_COLORS.length]!;
}

/** One or more output lines (a stack trace adds lines) for a parsed line from `source`. */
export function formatParsed(source: string, p: ParsedLine, f: LineFormat): string {
  const c = (code: string, s: string) => (f.color ? `${code}${s}${RESET}` : s);
  const levelText = (p.level ?? '').toUpperCase().padEnd(5);
  const fields = Object.entries(p.fields)
    .filter(([k, v]) => !(k === 'name' && v === source)) // pino's logger name, already in the source column
    .map(([k, v]) => `${k}=${formatValue(v)}`)
    .join(' ');
  const head = [
    c(DIM, clock(p.time)),
    p.level ? c(COLORS[p.level], levelText) : levelText,
    `${c(sourceColor(source), source.padEnd(f.nameWidth))} |`,
    p.msg,
  ].join(' ');
  const first = fields ? `${head}${p.msg ? ' ' : ''}${c(DIM, fields)}` : head;
  const pad = ' '.repeat(12 + 1 + 5 + 1 + f.nameWidth + 1) + '| ';
  const extra = p.stacks.flatMap((s) => s.split('\n')).map((l) => pad + l);
  return [first, ...extra].join('\n');
}

export function formatLine(source: string, line: string, f: LineFormat, now?: Date): string {
  return formatParsed(source, parseLine(line, now), f);
}

/** A line without time and source, for a crash report that quotes lines already shown: `LEVEL msg k=v`. */
export function formatBare(line: string): string {
  const p = parseLine(line);
  if (!p.level && Object.keys(p.fields).length === 0) return p.msg;
  const fields = Object.entries(p.fields).map(([k, v]) => `${k}=${formatValue(v)}`);
  return [(p.level ?? '').toUpperCase().padEnd(5), p.msg, ...fields, ...p.stacks.map((st) => `\n${st}`)].filter(Boolean).join(' ');
}

/** The last `capacity` lines of a child's output, for the crash report. */
export class LineTail {
  private readonly buf: string[] = [];
  constructor(private readonly capacity: number) {}
  push(line: string): void {
    this.buf.push(line);
    if (this.buf.length > this.capacity) this.buf.shift();
  }
  lines(): string[] {
    return [...this.buf];
  }
  clear(): void {
    this.buf.length = 0;
  }
}
