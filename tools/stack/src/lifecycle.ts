/** What has been started, stopped newest first however far start-up got; what is added once stopping began, right after. */
export class Lifecycle {
  private readonly stoppers: { name: string; stop: () => Promise<unknown> }[] = [];
  private stopping: Promise<void> | undefined;

  constructor(private readonly onError: (name: string, err: unknown) => void = () => {}) {}

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

  /** Stops everything, each once; resolves once everything added so far has stopped. */
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
