import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { compileRules, type CompiledRules } from './compile';
import { defaultRules } from './default-rules';
import { RulesError } from './errors';

/** The rules of RULES_FILE (JSON), or the built-in e-commerce rules when unset. Throws RulesError naming the rule. */
export function loadRules(file?: string): CompiledRules {
  if (!file) return compileRules(defaultRules);
  let text: string;
  let json: unknown;
  try {
    text = readFileSync(file, 'utf8');
    json = JSON.parse(text);
  } catch (err) {
    throw new RulesError(`rollup rules: cannot read ${file}: ${(err as Error).message}`);
  }
  const repeated = repeatedKey(text);
  if (repeated !== undefined)
    throw new RulesError(`rollup rules: ${repeated}: the key is repeated in ${file} (JSON.parse would keep only its last value)`);
  return compileRules(json);
}

/**
 * The path (`events.view`) of the first key an object of `text`, valid JSON, repeats; undefined when none does.
 * JSON.parse keeps a repeated key's last value without a word; YAML is a superset of JSON whose parser (the `yaml`
 * package) keeps every key and reports repeats.
 */
function repeatedKey(text: string): string | undefined {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (!doc.errors.some((e) => e.code === 'DUPLICATE_KEY')) return undefined;
  const find = (node: unknown, path: string[]): string | undefined => {
    if (isSeq(node)) {
      for (const [i, item] of node.items.entries()) {
        const found = find(item, [...path, String(i)]);
        if (found !== undefined) return found;
      }
    } else if (isMap(node)) {
      const keys = new Set<unknown>();
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? pair.key.value : pair.key;
        if (keys.has(key)) return [...path, String(key)].join('.');
        keys.add(key);
        const found = find(pair.value, [...path, String(key)]);
        if (found !== undefined) return found;
      }
    }
    return undefined;
  };
  return find(doc.contents, []) ?? '(root)';
}

/**
 * loadRules for a composition root (every app and the tenants tool): a bad rules file prints one line naming the rule
 * and exits 1. Rules that keep a visitor's data where erasure cannot reach it (CompiledRules.visitorDataOutOfReach:
 * an entity keyed by the visitor and another dimension, not erased but expired by a store's historyMonths; a counter
 * `by` the visitor on another entity, neither erased nor expired) are said once, a warning each, on `log` (the app's
 * logger; one whose `warn` does nothing loads them quietly), or on stderr without one.
 */
export function loadRulesOrExit(file?: string, log?: { warn(fields: object, message: string): void }): CompiledRules {
  let rules: CompiledRules;
  try {
    rules = loadRules(file);
  } catch (err) {
    if (!(err instanceof RulesError)) throw err;
    process.stderr.write(`tally: ${err.message}\n`);
    process.exit(1);
  }
  for (const { rule, entity, why } of rules.visitorDataOutOfReach) {
    const message = `rollup rules: ${rule}: ${why}`;
    if (log) log.warn({ rule, entity }, message);
    else process.stderr.write(`tally: warning: ${message}\n`);
  }
  return rules;
}
