/** What closeHttp needs of a fastify app (any type provider). */
export interface ClosableHttpApp {
  close(): PromiseLike<unknown>;
  server: { closeAllConnections(): void; closeIdleConnections(): void };
}

/** How often closeHttp closes the connections whose requests have been answered meanwhile. */
const IDLE_SWEEP_MS = 100;

/**
 * Stops an HTTP app for a graceful shutdown: stop accepting, let in-flight requests finish for up to `graceMs`,
 * then cut whatever is still open (a client that stopped reading a response would otherwise hold the shutdown
 * until its deadline and make the process exit 1). A keep-alive connection is closed once its request is answered
 * (Node closes only those idle when the close begins: one busy then would hold the shutdown for all of `graceMs`).
 *
 * A handler goes on after its connection is cut, and its caller never hears the answer: an app whose requests
 * write (the collector's enqueue) passes a grace that covers its slowest write, its deadlines included, and a
 * shutdown-step deadline above it (apps/collector/src/main.ts). The default suits read-only requests.
 */
export async function closeHttp(app: ClosableHttpApp, graceMs = 5_000): Promise<void> {
  const timer = setTimeout(() => app.server.closeAllConnections(), graceMs);
  timer.unref();
  const sweep = setInterval(() => app.server.closeIdleConnections(), IDLE_SWEEP_MS);
  sweep.unref();
  try {
    await app.close();
  } finally {
    clearTimeout(timer);
    clearInterval(sweep);
  }
}
