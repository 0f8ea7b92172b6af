// The usage text imports nothing, so `tenants --help` loads no more than this (cli.int.test.ts checks the scopes
// against SCOPES).
export const USAGE = `usage: tenants <command> [arguments]

  create <store> [--time-zone <IANA zone>]         create a tenant (default time zone UTC)
  issue-key <store> --scopes <s,...> [--label <t>]  issue a key; prints it once, on stdout
  revoke-key <store> <key-id>                      revoke a key (key ids: see list-keys)
  set-time-zone <store> <IANA zone>                change the store's time zone
  set-ingest-budget <store> <events/s | default>   the store's own ingest budget, or back to the default
  list-keys <store> [--json]                       list keys (ids, scopes, status; never the keys)
  show <store>                                     show the tenant

scopes: ingest, read, admin. Configured by DYNAMODB_ENDPOINT, DYNAMODB_TABLE, AWS_REGION.`;
