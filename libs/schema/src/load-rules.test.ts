import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileRules, defaultRules, loadRules, RulesError } from './index';

const dir = mkdtempSync(join(tmpdir(), 'tally-rules-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const file = (text: string) => {
  const path = join(dir, `rules-${n++}.json`);
  writeFileSync(path, text);
  return path;
};
const json = JSON.stringify(defaultRules, null, 2);

describe('loadRules', () => {
  it('loads a JSON rules file as compileRules compiles the same rules', () => {
    expect(loadRules(file(json)).fingerprint).toBe(compileRules(defaultRules).fingerprint);
    expect(loadRules(undefined).fingerprint).toBe(compileRules(defaultRules).fingerprint);
  });

  it("refuses a key repeated in an object, naming its path (JSON.parse kept the last one only: the first one's counters vanished)", () => {
    const twice = json.replace('"events": {', '"events": {\n    "view": { "counters": [{ "entity": "store", "metric": "OrderCount" }] },');
    const path = file(twice);
    expect(() => loadRules(path)).toThrowError(
      new RulesError(`rollup rules: events.view: the key is repeated in ${path} (JSON.parse would keep only its last value)`),
    );
    // Deeper down, in a list, and a key written with an escape (JSON.parse reads "\u0065ntity" as "entity").
    const inCounter = file(json.replace('"entity": "store",', '"entity": "store", "\\u0065ntity": "product",'));
    expect(() => loadRules(inCounter)).toThrowError(/^rollup rules: events\.view\.counters\.0\.entity: the key is repeated in /);
  });

  it('stays a JSON reader: what is not JSON is refused, as before', () => {
    const path = file('metrics: {}\nentities: {}\nevents: {}\n');
    expect(() => loadRules(path)).toThrowError(new RegExp(`^rollup rules: cannot read ${path}: `));
    expect(() => loadRules(join(dir, 'missing.json'))).toThrowError(RulesError);
  });
});
