// The usage text imports nothing, so `tenants --help` loads no more than this (cli.int.test.ts checks the scopes
// against SCOPES).
export const USAGE = `usage: tenants <command> [arguments]

  create <store> [--time-zone Z] [--currency C] [--history-months N|forever]
                                        create a tenant (default: time zone UTC, no currency,
                                        visitor history kept for ever); a deleted store's id is
                                        refused until its tombstone expires (it says when)
  issue-key <store> --scopes <s,...> [--label <t>]
                                        issue a key; prints it once, on stdout
  revoke-key <store> <key-id>           revoke a key (key ids: see list-keys)
  set-time-zone <store> <IANA zone>     change the store's time zone
  set-currency <store> <ISO 4217 code>  the currency revenue is shown in (EUR, USD, JPY…)
  set-ingest-budget <store> <events/s | default>
                                        the store's own ingest budget (1 to 10000000 events/s), or
                                        back to the collector's default
  list-keys <store> [--json]            list keys (ids, scopes, status; never the keys)
  show <store>                          show the tenant
  list [--json] [--reindex]             list every store, one column per field (- when unset;
                                        --reindex: rebuild the store index first, by a Scan of the
                                        table, for stores made by an older version)
  set <store> [--time-zone Z] [--currency C] [--history-months N|forever]
                                        change the store's settings (visitor history retention in
                                        months; a change of it schedules the restamp of the visitor
                                        items already written, which the dynamo-writer runs 90 s
                                        later)
  restamp-retention <store>             that restamp, by hand (e.g. after a DynamoDB outage): give
                                        the visitor items already written the expiry the store's
                                        visitor history setting gives now (waits 90 s first, for the
                                        writers' cached settings); prints how many items it scanned
                                        and restamped; if cut short, run it again
  delete-store <store>                  delete the store and all its data; prints from when its
                                        id can be used again; if cut short, run it again to finish
                                        it; once finished it says when it was deleted, exit 1
  erase-visitor <store> <visitor>       erase one visitor's history (store and product aggregates
                                        stay)

Each command takes only the options shown with it; any other is a usage error. Exit 0 done, 1
refused or failed, 2 a bad command line or value.

scopes: ingest, read, admin.
Configured by DYNAMODB_ENDPOINT (unset: the running npm start stack's DynamoDB, else AWS
DynamoDB in AWS_REGION when set), DYNAMODB_TABLE, AWS_REGION (restamp-retention also RULES_FILE,
which picks the visitor rows: run it with the dynamo-writers' one, else the items of entities
only theirs has are skipped; delete-store, erase-visitor and set --history-months also REDIS_URL,
unset: the stack's Redis, or REDIS_CLUSTER_NODES, or REDIS_SENTINELS with REDIS_SENTINEL_MASTER,
KEY_PREFIX, QUEUE_SHARDS, DEDUPE_WINDOW_SECONDS, RULES_FILE).`;
