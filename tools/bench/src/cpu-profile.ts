import { readFileSync } from 'node:fs';

/** A V8 CPU profile (`node --cpu-prof`), the fields read here. */
interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string }; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}

/**
 * Where a frame's time goes, by the nearest frame (from the leaf up) whose script is recognised: the first rule
 * matching the frame's URL (or, for V8's own frames, its name) names the stage. Native JSON.parse/stringify are
 * named with the stage that called them, so "parse the body" and "serialize the job" show apart.
 */
const STAGES: Array<[RegExp, string]> = [
  [/libs\/schema\/src\/(validate|fast-shape|event\.schema)/, 'validate events'],
  [/libs\/schema\/src\/rollup|libs\/key-layout\/src\/(zone|time|day)/, 'rollup'],
  [/libs\/intake\/src\/intake/, 'intake (fingerprint, job payloads)'],
  [/libs\/buckets\//, 'apply args (BucketStore)'],
  [/apps\/bucket-aggregator\/src\/events\.processor|libs\/queues\/src\/(payload|schema)/, 'events processor'],
  [/node_modules\/zod\//, 'zod'],
  [/node_modules\/bullmq\//, 'BullMQ'],
  [/node_modules\/msgpackr/, 'BullMQ (msgpackr)'],
  [/node_modules\/(ioredis|@ioredis|redis-errors|redis-parser|denque|cluster-key-slot|standard-as-callback)\//, 'ioredis'],
  [/node_modules\/(secure-json-parse|fast-json-stringify|@fastify\/(?!helmet))/, 'fastify body and reply'],
  [/node_modules\/(fastify|find-my-way|avvio|light-my-request|@fastify\/helmet|helmet)\//, 'fastify'],
  [/node_modules\/(pino|thread-stream|sonic-boom)/, 'logging'],
  [/node_modules\/(prom-client|tdigest|bintrees)\//, 'metrics'],
  [/apps\/collector\/|libs\/http\/|libs\/tenants\//, 'collector routes, auth'],
  [/node_modules\/(@aws-sdk|@smithy)\//, 'AWS SDK'],
  [/^node:(net|stream|internal\/stream|_http|http|internal\/http)/, 'node net/http'],
  [/^node:(zlib|crypto|internal\/crypto)/, 'node crypto/zlib'],
  [/^(node:|internal\/)/, 'node (other)'],
];

const SPECIAL: Record<string, string> = {
  '(garbage collector)': 'GC',
  '(program)': 'V8/runtime',
  '(idle)': 'idle',
  '(root)': 'V8/runtime',
};

/** Self time of each stage in a profile, ms, busiest first; idle left out. */
export function profileStages(path: string): {
  totalMs: number;
  stages: Array<{ stage: string; ms: number }>;
  leaves: Map<string, number>;
} {
  const p = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const stageOf = new Map<number, string>();
  const classify = (id: number): string => {
    const cached = stageOf.get(id);
    if (cached) return cached;
    const leaf = byId.get(id)!.callFrame;
    let stage = Object.hasOwn(SPECIAL, leaf.functionName) ? SPECIAL[leaf.functionName] : undefined;
    if (!stage) {
      for (let cur: number | undefined = id; cur !== undefined && !stage; cur = parent.get(cur)) {
        const f = byId.get(cur)!.callFrame;
        stage = STAGES.find(([re]) => re.test(f.url))?.[1];
      }
      stage ??= 'other';
      if (leaf.url === '' && (leaf.functionName === 'parse' || leaf.functionName === 'stringify'))
        stage = `${stage}: JSON.${leaf.functionName}`;
    }
    stageOf.set(id, stage);
    return stage;
  };
  const ms = new Map<string, number>();
  const leaves = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const stage = classify(p.samples[i]!);
    const d = (p.timeDeltas[i + 1] ?? 0) / 1000;
    if (stage === 'idle') continue;
    total += d;
    ms.set(stage, (ms.get(stage) ?? 0) + d);
    const f = byId.get(p.samples[i]!)!.callFrame;
    const leaf = `${stage} <- ${f.functionName || '(anonymous)'} ${f.url.replace(/^.*node_modules\//, '')}`;
    leaves.set(leaf, (leaves.get(leaf) ?? 0) + d);
  }
  return { totalMs: total, leaves, stages: [...ms].map(([stage, v]) => ({ stage, ms: v })).sort((a, b) => b.ms - a.ms) };
}
