/** A small Dockerfile reader: stages, their instructions, and what a stage inherits from the stage it is built FROM. */

export interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY, ENV, HEALTHCHECK, … */
  keyword: string;
  /** Everything after the keyword, continuation lines joined. */
  args: string;
  line: number;
}

export interface Stage {
  name: string;
  /** The image or stage this one starts from. */
  from: string;
  instructions: Instruction[];
}

/** What a stage ends up with, its base stages' settings included. */
export interface ResolvedStage {
  name: string;
  user?: string;
  stopSignal?: string;
  entrypoint?: string[];
  cmd?: string[];
  workdir?: string;
  env: Record<string, string>;
  expose: string[];
  healthcheck?: { options: Record<string, string>; cmd: string[] } | 'NONE';
  /** COPY instructions of this stage and its bases: flags (e.g. from) and the source/destination words. */
  copies: Array<{ flags: Record<string, string>; sources: string[]; dest: string }>;
  runs: string[];
}

export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      line = line.replace(/\\\s*$/, ' ');
      i++;
      // Comment lines inside a continued instruction are dropped, as Docker does.
      if (/^\s*#/.test(lines[i]!)) continue;
      line += lines[i]!;
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile line ${start + 1}: cannot read "${line.trim()}"`);
    const keyword = m[1]!.toUpperCase();
    const args = m[2]!.replace(/\s+/g, ' ').trim();
    if (keyword === 'FROM') {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!f) throw new Error(`Dockerfile line ${start + 1}: cannot read FROM ${args}`);
      stages.push({ name: f[2] ?? `#${stages.length}`, from: f[1]!, instructions: [] });
      continue;
    }
    const stage = stages[stages.length - 1];
    if (!stage) continue; // ARG before the first FROM
    stage.instructions.push({ keyword, args, line: start + 1 });
  }
  return stages;
}

/** `["a", "b"]` (exec form) or a shell-form string wrapped as `/bin/sh -c <string>`. */
export function parseCommand(args: string): string[] {
  const trimmed = args.trim();
  if (trimmed.startsWith('[')) return JSON.parse(trimmed) as string[];
  return ['/bin/sh', '-c', trimmed];
}

function parseEnv(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  // KEY=value pairs (values may be quoted); the legacy `ENV KEY value` form too.
  const pairs = args.match(/[A-Za-z_][A-Za-z0-9_]*=("[^"]*"|'[^']*'|\S*)/g);
  if (pairs) {
    for (const p of pairs) {
      const eq = p.indexOf('=');
      out[p.slice(0, eq)] = p.slice(eq + 1).replace(/^(["'])(.*)\1$/, '$2');
    }
    return out;
  }
  const legacy = /^([A-Za-z_][A-Za-z0-9_]*)\s+(.*)$/.exec(args);
  if (legacy) out[legacy[1]!] = legacy[2]!;
  return out;
}

function parseHealthcheck(args: string): ResolvedStage['healthcheck'] {
  if (args.trim().toUpperCase() === 'NONE') return 'NONE';
  const options: Record<string, string> = {};
  let rest = args;
  for (let m = /^--([a-z-]+)=(\S+)\s+/.exec(rest); m; m = /^--([a-z-]+)=(\S+)\s+/.exec(rest)) {
    options[m[1]!] = m[2]!;
    rest = rest.slice(m[0].length);
  }
  const cmd = /^CMD\s+(.*)$/i.exec(rest);
  if (!cmd) throw new Error(`HEALTHCHECK without CMD: ${args}`);
  return { options, cmd: parseCommand(cmd[1]!) };
}

/** The stage's settings with its base stages' (FROM <stage>) applied first. */
export function resolveStage(stages: readonly Stage[], name: string): ResolvedStage {
  const stage = stages.find((s) => s.name === name);
  if (!stage) throw new Error(`no stage "${name}" in the Dockerfile`);
  const base = stages.some((s) => s.name === stage.from) ? resolveStage(stages, stage.from) : undefined;
  const r: ResolvedStage = base
    ? { ...base, name, env: { ...base.env }, expose: [...base.expose], copies: [...base.copies], runs: [...base.runs] }
    : { name, env: {}, expose: [], copies: [], runs: [] };
  for (const ins of stage.instructions) {
    switch (ins.keyword) {
      case 'USER':
        r.user = ins.args;
        break;
      case 'STOPSIGNAL':
        r.stopSignal = ins.args;
        break;
      case 'ENTRYPOINT':
        r.entrypoint = parseCommand(ins.args);
        r.cmd = undefined; // Docker resets CMD when ENTRYPOINT is set
        break;
      case 'CMD':
        r.cmd = parseCommand(ins.args);
        break;
      case 'WORKDIR':
        r.workdir = ins.args;
        break;
      case 'ENV':
        Object.assign(r.env, parseEnv(ins.args));
        break;
      case 'EXPOSE':
        r.expose.push(...ins.args.split(' '));
        break;
      case 'HEALTHCHECK':
        r.healthcheck = parseHealthcheck(ins.args);
        break;
      case 'RUN':
        r.runs.push(ins.args);
        break;
      case 'COPY': {
        const words = ins.args.split(' ');
        const flags: Record<string, string> = {};
        while (words[0]?.startsWith('--')) {
          const [k, v] = words.shift()!.slice(2).split('=');
          flags[k!] = v ?? 'true';
        }
        r.copies.push({ flags, sources: words.slice(0, -1), dest: words[words.length - 1]! });
        break;
      }
      default:
        break;
    }
  }
  return r;
}
