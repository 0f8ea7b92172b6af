import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'atan2',
  'inf',
  'nan',
]);

/**
 * Metric names a PromQL expression reads: identifiers that are not functions, keywords, label names (inside
 * `{…}` or `by (…)`), strings or durations.
 */
export function metricNamesIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*(\(?))/g)) {
    const name = m[0];
    if (m[1] === '(' || KEYWORDS.has(name.toLowerCase())) continue;
    if (/^\d/.test(name)) continue;
    names.add(name);
  }
  return [...names];
}

/** `tally_x_bucket` / `_count` / `_sum` are series of the histogram or summary `tally_x`. */
export function metricCandidates(name: string): string[] {
  const m = /^(.*)_(bucket|count|sum)$/.exec(name);
  return m ? [name, m[1]!] : [name];
}

/** Every `tally_*` string literal in the non-test TypeScript sources under `dirs` (metric names in the code). */
export function tallyNamesInCode(roots: readonly string[]): Set<string> {
  const names = new Set<string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir)) {
      if (entry === 'node_modules' || entry === 'dist') continue;
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (path.endsWith('.ts') && !path.endsWith('.test.ts')) {
        for (const m of readFileSync(path, 'utf8').matchAll(/['"`](tally_[a-z0-9_]+)['"`]/g)) names.add(m[1]!);
      }
    }
  };
  for (const root of roots) walk(root);
  return names;
}
