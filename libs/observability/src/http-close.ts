/** What closeHttp needs of a fastify app (any type provider). */
export interface ClosableHttpApp {
  close(): PromiseLike<unknown>;
  server: { closeAllConnections(): void };
}

/**
 * Stops an HTTP app for a graceful shutdown: stop accepting, let in-flight requests finish for up to `graceMs`,
 * then cut whatever is still open (a client that stopped reading a response would otherwise hold the shutdown
 * until its deadline and make the process exit 1).
 */
export async function closeHttp(app: ClosableHttpApp, graceMs = 5_000): Promise<void> {
  const timer = setTimeout(() => app.server.closeAllConnections(), graceMs);
  timer.unref();
  try {
    await app.close();
  } finally {
    clearTimeout(timer);
  }
}
