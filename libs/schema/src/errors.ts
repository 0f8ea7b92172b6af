/** The rollup rules are invalid; the message names the rule. */
export class RulesError extends Error {
  readonly code = 'TALLY_ERR_RULES';
  constructor(message: string) {
    super(message);
    this.name = 'RulesError';
  }
}
