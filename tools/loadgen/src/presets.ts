import { defaultRules, type RulesInput } from '@tally/schema';
import type { StoreSpec } from './generator';

/** Three stores in zones that bin days differently: +05:45, -07:00/-08:00 (with DST) and UTC. */
export const DEMO_STORES: readonly StoreSpec[] = [
  { id: 'KTM1', timeZone: 'Asia/Kathmandu', weight: 1 },
  { id: 'LAX1', timeZone: 'America/Los_Angeles', weight: 2 },
  { id: 'UTC1', timeZone: 'UTC', weight: 1 },
];

/** The default e-commerce rules with every row flushed after every bucket: the most writes, the hardest case. */
export function everyBucketRules(): RulesInput {
  const rules = structuredClone(defaultRules) as RulesInput;
  for (const entity of Object.values(rules.entities)) entity.flush = { kind: 'bucket' };
  return rules;
}
