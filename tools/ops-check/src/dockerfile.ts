/** What a Dockerfile stage ends up with, read with dockerfile-ast (the parser of the Docker language server). */
import { DockerfileParser, type Healthcheck, type Instruction, type JSONInstruction, type ModifiableInstruction } from 'dockerfile-ast';

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

/** The stages in order; an unnamed stage is called `#<index>`. */
export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  for (const ins of DockerfileParser.parse(text).getInstructions()) {
    if (ins.getKeyword() === 'FROM') {
      const from = ins as import('dockerfile-ast').From;
      const image = from.getImageName();
      if (!image) throw new Error(`Dockerfile line ${ins.getRange().start.line + 1}: FROM names no image`);
      const tag = from.getImageTag();
      stages.push({ name: from.getBuildStage() ?? `#${stages.length}`, from: tag ? `${image}:${tag}` : image, instructions: [] });
      continue;
    }
    stages[stages.length - 1]?.instructions.push(ins); // an ARG before the first FROM belongs to no stage
  }
  return stages;
}

/** Exec form (`["a", "b"]`) as its strings; shell form wrapped as `/bin/sh -c <string>`, as Docker runs it. */
function command(ins: JSONInstruction): string[] {
  const json = ins.getJSONStrings();
  if (ins.getOpeningBracket() && json.length > 0) return json.map((s) => s.getJSONValue());
  return ['/bin/sh', '-c', ins.getArgumentsContent() ?? ''];
}

const words = (ins: Instruction) => ins.getArguments().map((a) => a.getValue());
const flags = (ins: Instruction) =>
  Object.fromEntries((ins as ModifiableInstruction).getFlags().map((f) => [f.getName(), f.getValue() ?? 'true']));

/** The stage's settings with its base stages' (FROM <stage>) applied first. */
export function resolveStage(stages: readonly Stage[], name: string): ResolvedStage {
  const stage = stages.find((s) => s.name === name);
  if (!stage) throw new Error(`no stage "${name}" in the Dockerfile`);
  const base = stages.some((s) => s.name === stage.from) ? resolveStage(stages, stage.from) : undefined;
  const r: ResolvedStage = base
    ? { ...base, name, env: { ...base.env }, expose: [...base.expose], copies: [...base.copies], runs: [...base.runs] }
    : { name, env: {}, expose: [], copies: [], runs: [] };
  for (const ins of stage.instructions) {
    switch (ins.getKeyword()) {
      case 'USER':
        r.user = ins.getArgumentsContent() ?? undefined;
        break;
      case 'STOPSIGNAL':
        r.stopSignal = ins.getArgumentsContent() ?? undefined;
        break;
      case 'ENTRYPOINT':
        r.entrypoint = command(ins as JSONInstruction);
        r.cmd = undefined; // Docker resets CMD when ENTRYPOINT is set
        break;
      case 'CMD':
        r.cmd = command(ins as JSONInstruction);
        break;
      case 'WORKDIR':
        r.workdir = ins.getArgumentsContent() ?? undefined;
        break;
      case 'ENV':
        for (const p of (ins as import('dockerfile-ast').Env).getProperties()) r.env[p.getName()] = p.getValue() ?? '';
        break;
      case 'EXPOSE':
        r.expose.push(...words(ins));
        break;
      case 'HEALTHCHECK': {
        const hc = ins as Healthcheck;
        if (hc.getSubcommand()?.getValue().toUpperCase() === 'NONE') {
          r.healthcheck = 'NONE';
          break;
        }
        if (hc.getSubcommand()?.getValue().toUpperCase() !== 'CMD')
          throw new Error(`HEALTHCHECK without CMD: ${ins.getArgumentsContent()}`);
        // The CMD part: what follows the subcommand, exec or shell form.
        const text = ins.getTextContent();
        const rest = text.slice(text.search(/\bCMD\b/i) + 3).trim();
        const cmd = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : ['/bin/sh', '-c', rest];
        r.healthcheck = { options: flags(ins), cmd };
        break;
      }
      case 'RUN':
        r.runs.push(ins.getArgumentsContent() ?? '');
        break;
      case 'COPY': {
        const w = words(ins);
        r.copies.push({ flags: flags(ins), sources: w.slice(0, -1), dest: w[w.length - 1]! });
        break;
      }
      default:
        break;
    }
  }
  return r;
}
