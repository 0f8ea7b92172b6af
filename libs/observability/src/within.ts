/** The rejection of `within` when the time ran out. */
export class TimedOut extends Error {}

/** `work`, or a rejection (TimedOut) with `message` once `ms` passed first (a late failure of `work` is ignored). */
export function within<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimedOut(`${message} within ${ms}ms`)), ms);
  });
  work.catch(() => {});
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}
