import { TallyError } from '@tally/key-layout';

/** The rollup rules are invalid; the message names the rule. */
export class RulesError extends TallyError {
  readonly code = 'TALLY_ERR_RULES';
}
