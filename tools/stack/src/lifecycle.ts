/**
 * What has been started, so it can be stopped in reverse order (apps before Redis before dynalite),
 * however far start-up got. Something added once stopping began is stopped right away.
 */
export class Lifecycle {
  private readonly stoppers: { name: string; stop: () => Promise<unknown> }[] = [];
  private readonly late: Promise<void>[] = [];
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
    if (this.stopping) this.late.push(this.run(name, stop));
    else this.stoppers.push({ name, stop });
  }

  /**
   * Stops everything, newest first. Safe to call again: it resolves once everything added so far,
   * including what was added after stopping began, has stopped.
   */
  async stop(): Promise<void> {
    this.stopping ??= (async () => {
      while (this.stoppers.length > 0) {
        const { name, stop } = this.stoppers.pop()!;
        await this.run(name, stop);
      }
    })();
    await this.stopping;
    await Promise.all(this.late);
  }

  private async run(name: string, stop: () => Promise<unknown>): Promise<void> {
    try {
      await stop();
    } catch (err) {
      this.onError(name, err);
    }
  }
}
