import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { compileRules, defaultRules, loadRules, loadRulesOrExit, RulesError } from './index';

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

describe('loadRulesOrExit', () => {
  /**
   * The default rules keeping a visitor's data where erasure cannot reach it: on a row keyed by two (expired all the
   * same), and by visitor on product rows (neither erased nor expired).
   */
  const unreachable = JSON.stringify({
    ...defaultRules,
    metrics: { ...defaultRules.metrics, Viewers: { code: 'vw', description: 'views of a product, keyed by visitor' } },
    entities: { ...defaultRules.entities, basket: { key: ['visitor', 'product'], flush: { kind: 'bucket' } } },
    events: {
      ...defaultRules.events,
      view: {
        ...defaultRules.events.view,
        counters: [
          ...defaultRules.events.view.counters,
          { entity: 'basket', metric: 'ViewCount' },
          { entity: 'product', metric: 'Viewers', by: 'visitor' },
        ],
      },
    },
  });

  it("warns once per rule that keeps a visitor's data out of reach of erasure, naming it and why (and whether it expires)", () => {
    const warn = vi.fn();
    const rules = loadRulesOrExit(file(unreachable), { warn });
    expect(rules.visitorDataOutOfReach).toHaveLength(2);
    expect(warn.mock.calls).toEqual([
      [
        { rule: 'entities.basket', entity: 'basket' },
        "rollup rules: entities.basket: keyed by visitor and product (key [visitor, product]): a visitor's rows of it are not erased with the visitor (a store's historyMonths expires them)",
      ],
      [
        { rule: 'events.view.counters.5', entity: 'product' },
        "rollup rules: events.view.counters.5: counts Viewers by visitor on product rows: a visitor's counts there are neither erased with the visitor nor expired by a store's historyMonths",
      ],
    ]);
    // The default rules keep a visitor's data on the visitor's row alone: nothing to say.
    const quiet = vi.fn();
    loadRulesOrExit(undefined, { warn: quiet });
    loadRulesOrExit(file(json), { warn: quiet });
    expect(quiet).not.toHaveBeenCalled();
  });

  it('without a logger, writes the warnings to stderr', () => {
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      loadRulesOrExit(file(unreachable));
      expect(stderr.mock.calls.map(([line]) => line)).toEqual([
        expect.stringMatching(/^tally: warning: rollup rules: entities\.basket: keyed by visitor and product .*\n$/),
        expect.stringMatching(/^tally: warning: rollup rules: events\.view\.counters\.5: counts Viewers by visitor on product rows: .*\n$/),
      ]);
    } finally {
      stderr.mockRestore();
    }
  });
});
