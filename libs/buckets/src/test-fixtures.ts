import type { OutboxRead } from './bucket-store';

/** The fields of an outbox read, as the writer acks them once written. */
export const outboxFields = (out: OutboxRead): string[] => out.entries.map((e) => e.field);
