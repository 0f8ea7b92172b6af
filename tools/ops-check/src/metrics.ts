import { globSync, readFileSync } from 'node:fs';
import { parser } from '@prometheus-io/lezer-promql';

/** Metric names a PromQL expression reads (its vector selectors), read with Prometheus's own grammar; throws when it does not parse. */
export function metricNamesIn(expr: string): string[] {
  const names = new Set<string>();
  parser.parse(expr).iterate({
    enter: (node) => {
      if (node.type.isError) throw new Error(`PromQL does not parse (at character ${node.from})`);
      if (node.name === 'Identifier' && node.node.parent?.name === 'VectorSelector') names.add(expr.slice(node.from, node.to));
    },
  });
  return [...names];
}

/** `tally_x_bucket` / `_count` / `_sum` are series of the histogram or summary `tally_x`. */
export function metricCandidates(name: string): string[] {
  const m = /^(.*)_(bucket|count|sum)$/.exec(name);
  return m ? [name, m[1]!] : [name];
}

/** Every `tally_*` string literal in the non-test TypeScript sources under `roots` (metric names in the code). */
export function tallyNamesInCode(roots: readonly string[]): Set<string> {
  const files = roots.flatMap((root) =>
    globSync('**/*.ts', { cwd: root, exclude: ['**/node_modules/**', '**/dist/**', '**/*.test.ts'] }).map((f) => `${root}/${f}`),
  );
  return new Set(files.flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/['"`](tally_[a-z0-9_]+)['"`]/g)].map((m) => m[1]!)));
}
