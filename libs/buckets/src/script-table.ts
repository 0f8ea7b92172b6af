import type { ChainableCommander, Cluster, Redis } from 'ioredis';
import { createHash } from 'node:crypto';
import { keySlot } from '@tally/key-layout';

/**
 * A Lua script with its KEYS and ARGV named. The Lua body reads them as `K.<name>` and `A.<name>`; a script
 * that takes a variable tail of keys or arguments (per row, per bucket) reads it from `KEYS[KR]` and `ARGV[AR]`
 * on, where KR and AR are the first indexes after the named ones. Every key a script touches is in KEYS (named or
 * in the tail): no script builds a key name.
 */
export interface ScriptDef<K extends string, A extends string, R> {
  readonly name: string;
  readonly keys: readonly K[];
  readonly args: readonly A[];
  /** The source sent to Redis: shebang line, the prelude (globals read as locals; K, A, KR, AR), then the body. */
  readonly lua: string;
  readonly sha: string;
  /** Phantom: the reply's type (Redis replies are not checked at run time). */
  readonly reply?: R;
}

/**
 * Defines a script whose reply has type R: `defineScript<R>()({ name, shebang, keys, args, body })` (curried so that
 * the key and argument names are inferred). `shebang` is `#!lua` or `#!lua flags=no-writes` (see scripts.ts).
 */
export function defineScript<R>() {
  return <const K extends string = never, const A extends string = never>(def: {
    name: string;
    shebang: '#!lua' | '#!lua flags=no-writes';
    keys: readonly K[];
    args: readonly A[];
    body: string;
  }): ScriptDef<K, A, R> => {
    const table = (names: readonly string[], v: string) => `{${names.map((n, i) => `${n} = ${v}[${i + 1}]`).join(', ')}}`;
    const lua = `${def.shebang}
local KEYS, ARGV, redis, string, table, math, tonumber, unpack, ipairs = KEYS, ARGV, redis, string, table, math, tonumber, unpack, ipairs
local K = ${table(def.keys, 'KEYS')}
local A = ${table(def.args, 'ARGV')}
local KR, AR = ${def.keys.length + 1}, ${def.args.length + 1}
${def.body}`;
    return { name: def.name, keys: def.keys, args: def.args, lua, sha: createHash('sha1').update(lua).digest('hex') };
  };
}

type Value = string | number;

/**
 * Runs a script: named keys and arguments in their declared order, then the tails. EVALSHA, falling back to EVAL
 * (which caches the script on that node) when the node does not know it yet. On a Cluster, ioredis routes the call
 * by its keys' slot; every key of one call must share that slot.
 */
export function runScript<K extends string, A extends string, R>(
  redis: Redis | Cluster,
  s: ScriptDef<K, A, R>,
  keys: Readonly<Record<K, string>>,
  args: Readonly<Record<A, Value>>,
  tail: { keys?: readonly string[]; args?: ReadonlyArray<Value | Buffer> } = {},
  opts: { buffers?: boolean } = {},
): Promise<R> {
  const allKeys = [...s.keys.map((k) => keys[k]), ...(tail.keys ?? [])];
  const rest = [...allKeys, ...s.args.map((a) => args[a]), ...(tail.args ?? [])];
  // With `buffers`, bulk replies come back as Buffers (binary values such as the sketches).
  const send = opts.buffers
    ? (cmd: 'evalsha' | 'eval', body: string) => redis.callBuffer(cmd, body, allKeys.length, ...rest) as Promise<unknown>
    : (cmd: 'evalsha' | 'eval', body: string) =>
        cmd === 'evalsha' ? redis.evalsha(body, allKeys.length, ...rest) : redis.eval(body, allKeys.length, ...rest);
  // Not async, and one hop on success: callers' replies resolve in the order Redis sent them.
  return send('evalsha', s.sha).catch((err: Error) => {
    if (!/^NOSCRIPT/.test(err.message ?? '')) throw err;
    return send('eval', s.lua);
  }) as Promise<R>;
}

/** One call of a script in a batch (runScripts): its named keys and arguments, and tails. */
export interface ScriptCall<K extends string, A extends string> {
  keys: Readonly<Record<K, string>>;
  args: Readonly<Record<A, Value>>;
  tail?: { keys?: readonly string[]; args?: readonly Value[] };
}

/**
 * Runs many calls of one script in one round trip per Redis node: a pipeline of EVALSHAs (then one of EVALs for
 * the calls that met NOSCRIPT). On a Cluster the calls are grouped by the node serving their keys' slot (each call's
 * keys share one slot). Each call is atomic on its own, as with runScript; nothing is atomic across calls. Returns
 * each call's reply, or its error, in the calls' order.
 */
export async function runScripts<K extends string, A extends string, R>(
  redis: Redis | Cluster,
  s: ScriptDef<K, A, R>,
  calls: ReadonlyArray<ScriptCall<K, A>>,
): Promise<Array<R | Error>> {
  const out: Array<R | Error> = new Array<R | Error>(calls.length);
  const lines = calls.map((c) => {
    const keys = [...s.keys.map((k) => c.keys[k]), ...(c.tail?.keys ?? [])];
    return { keys, rest: [...keys, ...s.args.map((a) => c.args[a]), ...(c.tail?.args ?? [])] };
  });
  const groups = new Map<string, number[]>();
  // A Cluster whose slots are not known yet (not connected) takes one group: ioredis waits for them, and refuses a
  // pipeline spanning nodes, which then fails as one call would.
  const cluster = redis.isCluster ? (redis as Cluster) : undefined;
  calls.forEach((_, i) => {
    const first = lines[i]!.keys[0];
    const group = cluster && first !== undefined ? (cluster.slots[keySlot(first)]?.join(',') ?? '') : '';
    const list = groups.get(group);
    if (list) list.push(i);
    else groups.set(group, [i]);
  });
  const exec = async (cmd: 'evalsha' | 'eval', body: string, at: readonly number[]) => {
    const p: ChainableCommander = redis.pipeline();
    for (const i of at) p[cmd](body, lines[i]!.keys.length, ...lines[i]!.rest);
    const res = (await p.exec()) ?? [];
    return at.map((_, j) => res[j] ?? [new Error('no reply'), null]);
  };
  await Promise.all(
    [...groups.values()].map(async (at) => {
      const missing: number[] = [];
      (await exec('evalsha', s.sha, at)).forEach(([err, v], j) => {
        if (err && /^NOSCRIPT/.test(err.message ?? '')) missing.push(at[j]!);
        else out[at[j]!] = err ?? (v as R);
      });
      if (missing.length === 0) return;
      (await exec('eval', s.lua, missing)).forEach(([err, v], j) => (out[missing[j]!] = err ?? (v as R)));
    }),
  );
  return out;
}
