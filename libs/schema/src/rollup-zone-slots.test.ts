import { describe, expect, it } from 'vitest';
import { compileRules, defaultRules, rollup, validateEvents } from './index';

const rules = compileRules(defaultRules);

describe('rollup: local days next to zone transitions off the quarter hour', () => {
  it('bins each event of a batch in its own local day when clocks went back at 00:01 (America/St_Johns, 2010)', () => {
    // 02:30Z is 00:00 on Nov 7 (NDT), 02:40Z 23:10 on Nov 6 (NST): one 15-minute slot of UTC, two local days.
    const view = (ts: string) => ({ type: 'view', ts, dims: { product: 'P1' } });
    const limits = { now: Date.parse('2010-11-08T00:00:00Z'), clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };
    for (const order of [
      ['2010-11-07T02:30:00Z', '2010-11-07T02:40:00Z'],
      ['2010-11-07T02:40:00Z', '2010-11-07T02:30:00Z'],
    ]) {
      const { events, errors } = validateEvents(rules, order.map(view), limits);
      expect(errors).toEqual([]);
      expect(Object.fromEntries(rollup(rules, 'S1', 'America/St_Johns', events).get('S1')!)).toEqual({
        '2010-310|v': 1,
        '2010-311|v': 1,
      });
    }
  });
});
