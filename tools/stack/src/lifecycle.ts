/**
 * What has been started, so it can be stopped in reverse order (apps, then dynalite, then Redis),
 * however far start-up got. Something added once stopping began is stopped right after.
 */
export class Lifecycle {
  private readonly stoppers: { name: string; stop: () => Promise<unknown> }[] = [];
  private stopping: Promise<void> | undefined;

  constructor(private readonly onError: (name: string, err: unknown) => void = () => {}) {}

  /** How many things are registered and not stopped yet. */
  get size(): number {
    return this.stoppers.length;
  }

  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  add(name: string, stop: () => Promise<unknown>): void {
    this.stoppers.push({ name, stop });
    if (this.stopping) void this.stop();
  }

  /**
   * Stops everything, newest first, each once. Safe to call again: it resolves once everything added so far,
   * including what was added after stopping began, has stopped.
   */
  stop(): Promise<void> {
    this.stopping = (this.stopping ?? Promise.resolve()).then(async () => {
      for (let next = this.stoppers.pop(); next; next = this.stoppers.pop()) {
        const { name, stop } = next;
        await stop().catch((err: unknown) => this.onError(name, err));
      }
    });
    return this.stopping;
  }
}
