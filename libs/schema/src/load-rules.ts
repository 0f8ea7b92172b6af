import { readFileSync } from 'node:fs';
import { compileRules, type CompiledRules } from './compile';
import { defaultRules } from './default-rules';
import { RulesError } from './errors';

/** The rules of RULES_FILE (JSON), or the built-in e-commerce rules when unset. Throws RulesError naming the rule. */
export function loadRules(file?: string): CompiledRules {
  if (!file) return compileRules(defaultRules);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new RulesError(`rollup rules: cannot read ${file}: ${(err as Error).message}`);
  }
  return compileRules(json);
}

/** loadRules for a composition root: a bad rules file prints one line naming the rule and exits 1. */
export function loadRulesOrExit(file?: string): CompiledRules {
  try {
    return loadRules(file);
  } catch (err) {
    if (!(err instanceof RulesError)) throw err;
    process.stderr.write(`tally: ${err.message}\n`);
    process.exit(1);
  }
}
