import { isHealthy } from '@tally/testing';

/** Polls `url` until it answers 2xx; false when `timeoutMs` passes or `cancelled()` turns true first. */
export async function waitForHealthy(
  url: string,
  timeoutMs: number,
  cancelled: () => boolean = () => false,
  intervalMs = 200,
): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (!cancelled()) {
    if (await isHealthy(url)) return true;
    if (Date.now() + intervalMs > until) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return false;
}
