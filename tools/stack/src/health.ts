/** GET `url`; true on a 2xx answer within `timeoutMs`. */
export async function isHealthy(url: string, timeoutMs = 1_000): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

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
