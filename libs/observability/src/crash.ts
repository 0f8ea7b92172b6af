/**
 * Test-only crash points: when TALLY_CRASH_POINT names a point (optionally `point@N` for the N-th time it is
 * reached), the process SIGKILLs itself there, so tests can prove that a crash at that exact moment loses and
 * doubles nothing. Unset in production: the returned function is then a no-op.
 */
export function crashPoints(configured: string | undefined): (point: string) => void {
  if (!configured) return () => undefined;
  const [name, nth] = configured.split('@');
  let remaining = nth ? Number(nth) : 1;
  return (point) => {
    if (point !== name) return;
    remaining--;
    if (remaining <= 0) {
      process.stderr.write(`tally: crash point ${point} reached: SIGKILL\n`);
      process.kill(process.pid, 'SIGKILL');
    }
  };
}
