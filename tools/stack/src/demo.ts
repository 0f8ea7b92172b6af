/** What the running stack looks like, for hooks that act on it once it is up. */
export interface StackContext {
  /** Base URL of each app by name, e.g. `collector` → `http://127.0.0.1:7401`. */
  urls: Record<'collector' | 'query-api' | 'bucket-aggregator' | 'dynamo-writer', string>;
  redisUrl: string;
  dynamoEndpoint: string;
  table: string;
  region: string;
  dataDir: string;
  /** Prints a line in the stack's own log. */
  log(message: string): void;
}

/**
 * Runs once, after every app answered /healthz and the URLs were printed.
 * Does nothing yet; later it will create a demo store and print its keys and a curl command to send events.
 */
export async function afterStart(_ctx: StackContext): Promise<void> {}
