// Dockerfile stages read with dockerfile-ast (the parser of the Docker language server).
import { DockerfileParser } from 'dockerfile-ast';
import type { Env, Healthcheck, Instruction, JSONInstruction, ModifiableInstruction } from 'dockerfile-ast';

/** What a stage ends up with, its base stages' settings included. */
export interface ResolvedStage {
  user?: string;
  stopSignal?: string;
  entrypoint?: string[];
  cmd?: string[];
  workdir?: string;
  env: Record<string, string>;
  expose: string[];
  healthcheck?: { cmd: string[] } | 'NONE';
  /** COPY instructions of this stage and its bases: --from, and the source/destination words. */
  copies: Array<{ from?: string; sources: string[]; dest: string }>;
  runs: string[];
}

/** The stages in order (an unnamed one is `#<index>`): the image or stage each starts from, and its instructions. */
export function parseDockerfile(text: string) {
  const dockerfile = DockerfileParser.parse(text);
  return dockerfile.getFROMs().map((from, i) => {
    const [image, tag] = [from.getImageName(), from.getImageTag()];
    if (!image) throw new Error(`Dockerfile line ${from.getRange().start.line + 1}: FROM names no image`);
    const name = from.getBuildStage() ?? `#${i}`;
    return { name, from: tag ? `${image}:${tag}` : image, image: dockerfile.getContainingImage(from.getRange().start)! };
  });
}

/** Exec form (`["a", "b"]`) as its strings; shell form wrapped as `/bin/sh -c <string>`, as Docker runs it. */
function command(ins: Instruction): string[] {
  const json = (ins as JSONInstruction).getJSONStrings();
  if ((ins as JSONInstruction).getOpeningBracket() && json.length > 0) return json.map((s) => s.getJSONValue());
  return ['/bin/sh', '-c', ins.getArgumentsContent() ?? ''];
}

/** `HEALTHCHECK NONE`, or the command of `HEALTHCHECK [options] CMD …` (what follows CMD, exec or shell form). */
function healthcheck(ins: Healthcheck): ResolvedStage['healthcheck'] {
  const sub = ins.getSubcommand()?.getValue().toUpperCase();
  if (sub === 'NONE') return 'NONE';
  if (sub !== 'CMD') throw new Error(`HEALTHCHECK without CMD: ${ins.getArgumentsContent()}`);
  const text = ins.getTextContent();
  const rest = text.slice(text.search(/\bCMD\b/i) + 3).trim();
  return { cmd: rest.startsWith('[') ? (JSON.parse(rest) as string[]) : ['/bin/sh', '-c', rest] };
}

const args = (ins: Instruction) => ins.getArgumentsContent() ?? undefined;
const words = (ins: Instruction) => ins.getArguments().map((a) => a.getValue());

/** How each instruction changes the stage (the others change nothing checked here). */
const APPLY: Record<string, (r: ResolvedStage, ins: Instruction) => void> = {
  USER: (r, ins) => (r.user = args(ins)),
  STOPSIGNAL: (r, ins) => (r.stopSignal = args(ins)),
  // Docker resets CMD when ENTRYPOINT is set.
  ENTRYPOINT: (r, ins) => Object.assign(r, { entrypoint: command(ins), cmd: undefined }),
  CMD: (r, ins) => (r.cmd = command(ins)),
  WORKDIR: (r, ins) => (r.workdir = args(ins)),
  ENV: (r, ins) => (ins as Env).getProperties().forEach((p) => (r.env[p.getName()] = p.getValue() ?? '')),
  EXPOSE: (r, ins) => r.expose.push(...words(ins)),
  HEALTHCHECK: (r, ins) => (r.healthcheck = healthcheck(ins as Healthcheck)),
  RUN: (r, ins) => r.runs.push(ins.getArgumentsContent() ?? ''),
  COPY: (r, ins) => {
    const from = (ins as ModifiableInstruction).getFlags().find((f) => f.getName() === 'from');
    r.copies.push({ from: from && (from.getValue() ?? ''), sources: words(ins).slice(0, -1), dest: words(ins).at(-1)! });
  },
};

/** The stage's settings with its base stages' (FROM <stage>) applied first. */
export function resolveStage(stages: ReturnType<typeof parseDockerfile>, name: string): ResolvedStage {
  const stage = stages.find((s) => s.name === name);
  if (!stage) throw new Error(`no stage "${name}" in the Dockerfile`);
  // Each call makes a new object: the base's can be changed in place.
  const base = stages.some((s) => s.name === stage.from) ? resolveStage(stages, stage.from) : undefined;
  const r: ResolvedStage = base ?? { env: {}, expose: [], copies: [], runs: [] };
  for (const ins of stage.image.getInstructions()) APPLY[ins.getKeyword()]?.(r, ins);
  return r;
}
