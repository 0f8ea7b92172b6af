import { sleep } from '@tally/testing';
import type { EventInput } from '@tally/schema';
import type { StoreEvents } from './expected';
import type { Fleet } from './fleet';
import { generateLoad, goodEvents, type LoadBatch, type LoadOptions, type StoreSpec } from './generator';
import { createRng } from './rng';
import { clientSender, httpSender, type ClientSenderOptions, type HttpSenderOptions, type RetryPolicy, type SendOutcome } from './senders';

/** A load run's figures, updated as it runs. */
const newLoadStats = () => ({
  /** Distinct batches sent (not their duplicates), and their events, valid and invalid. */
  batches: 0,
  eventsSent: 0,
  /** Events accepted (once, whatever the duplicates) and refused (all of a refused batch, the invalid ones of a partial one). */
  accepted: 0,
  rejected: 0,
  duplicatesSent: 0,
  /** Batches with no definitive answer before the retry deadline. */
  gaveUp: 0,
  /** Retries by reason (`503`, `ECONNREFUSED`, `QueueUnavailableError`, …). */
  retries: {} as Record<string, number>,
  byVia: { http: 0, client: 0 },
  /** Answers that contradict what the edge must do (a valid batch refused, an invalid event accepted, …). */
  edgeMismatches: [] as string[],
  /** Why the run stopped early: the collector refused a batch as too large (413), as it would every larger one. */
  stoppedBy: undefined as string | undefined,
});
export type LoadStats = ReturnType<typeof newLoadStats>;

export interface RunLoadOptions {
  /** The traffic: generateLoad over the target's stores, or `load.stores`. */
  load: Omit<LoadOptions, 'stores' | 'now'> & { stores?: readonly StoreSpec[] };
  map?: (batch: LoadBatch) => LoadBatch;
  /** The ways in: HTTP to the collector, libs/client on the queues, or both (the default). */
  via?: 'http' | 'client' | 'both';
  retry?: Omit<RetryPolicy, 'onRetry'>;
  /** Share of batches sent through libs/client with both ways in. Default 0.3. */
  clientShare?: number;
  /** Events per second (a token bucket over all workers); undefined = as fast as the fleet answers. */
  rate?: number;
  /** Stop taking new batches after this long, or once this returns true. */
  durationMs?: number;
  shouldStop?: () => boolean;
  /** Batches in flight at once. Default 4. */
  concurrency?: number;
  /** Share of accepted batches sent again with the same idempotency key (half of them through the other path). Default 0. */
  duplicateShare?: number;
  /** False: `accepted` stays empty (a long run against an installation that is not checked). */
  keepAccepted?: boolean;
  onProgress?: (stats: LoadStats) => void;
}

/**
 * Sends `generateLoad(load)` at `rate` events/s, some batches twice, and checks every answer against what the edge
 * must do: a clean batch accepted whole, one with invalid events refused naming exactly those (or, with ?partial=true,
 * as half of such HTTP batches are sent, accepted without them). Choices seeded by the load's seed. Returns at once
 * `stats` (live), `accepted` (each accepted batch's events once: what the counts must include) and `done`.
 */
export function loadTo(
  target: {
    stores: readonly StoreSpec[];
    http: Omit<HttpSenderOptions, keyof RetryPolicy>;
    client: Omit<ClientSenderOptions, keyof RetryPolicy>;
  },
  opts: RunLoadOptions,
) {
  const stats = newLoadStats();
  const acceptedEvents: StoreEvents[] = [];
  const retry = { ...opts.retry, onRetry: (reason: string) => void (stats.retries[reason] = (stats.retries[reason] ?? 0) + 1) };
  const http = opts.via === 'client' ? undefined : httpSender({ ...target.http, ...retry });
  const client = opts.via === 'http' ? undefined : clientSender({ ...target.client, ...retry });
  const generated = generateLoad({ now: () => Date.now(), stores: target.stores, ...opts.load });
  const batches = opts.map ? generated.map(opts.map) : generated;
  const rng = createRng(opts.load.seed);
  const clientShare = http && client ? (opts.clientShare ?? 0.3) : client ? 1 : 0;
  const started = Date.now();
  let nextSlot = started;

  const take = async (n: number) => {
    if (!opts.rate) return;
    const now = Date.now();
    const at = Math.max(now, nextSlot);
    nextSlot = at + (n / opts.rate) * 1_000;
    if (at > now) await sleep(at - now);
  };
  const stopped = () =>
    stats.stoppedBy !== undefined ||
    (opts.durationMs !== undefined && Date.now() - started >= opts.durationMs) ||
    (opts.shouldStop?.() ?? false);

  const mismatch = (batch: LoadBatch, via: string, what: string): undefined => {
    if (stats.edgeMismatches.length < 100) stats.edgeMismatches.push(`batch ${batch.seq} (${batch.store}, ${via}): ${what}`);
  };

  /** The accepted events of an answer (possibly none), noting what contradicts what the edge must do. */
  const judge = (batch: LoadBatch, via: string, partial: boolean, out: SendOutcome): readonly EventInput[] | undefined => {
    const bad = batch.badIndexes;
    const problem = (what: string) => mismatch(batch, via, what);
    if (out.kind === 'gave-up') return problem(`no definitive answer after ${out.attempts} attempts (${out.lastError})`);
    if (out.kind === 'rejected' && out.status === 413) {
      // A size limit of the collector's (MAX_EVENTS_PER_REQUEST, MAX_BODY_BYTES), not a fault: say it once and stop.
      stats.stoppedBy ??= `the collector refused a batch of ${batch.events.length} events as too large: ${out.message}`;
      return [];
    }
    if (bad.length === 0) {
      if (out.kind !== 'accepted') return problem(`a valid batch was refused: ${out.status} ${out.code} ${out.message}`);
      if (out.accepted !== batch.events.length) problem(`accepted ${out.accepted} of ${batch.events.length}`);
      return batch.events;
    }
    const refused = [...new Set((out.errors ?? []).map((e) => e.index))].sort((a, b) => a - b).join(',');
    if (refused !== bad.join(','))
      problem(`refused events [${refused}], expected exactly the invalid ones [${bad.join(',')}] (${batch.badKinds.join(',')})`);
    if (partial) {
      if (out.kind !== 'accepted') return problem(`partial batch with valid events answered ${out.status} ${out.code}`);
      const good = goodEvents(batch);
      if (out.accepted !== good.length) problem(`partial: accepted ${out.accepted}, expected ${good.length}`);
      return good;
    }
    if (out.kind === 'accepted') {
      problem(`a batch with invalid events was accepted (${out.accepted} events)`);
      return batch.events; // what the fleet will count now
    }
    if (out.status !== 400) problem(`refused with ${out.status}, expected 400`);
    return [];
  };

  const worker = async () => {
    while (!stopped()) {
      const step = batches.next();
      if (step.done) return;
      const batch = step.value;
      await take(batch.events.length);
      const sender = rng.chance(clientShare) ? client! : http!;
      const partial = sender.via === 'http' && batch.badIndexes.length > 0 && rng.chance(0.5);
      const duplicate = rng.chance(opts.duplicateShare ?? 0);
      const dupViaOther = rng.chance(0.5);
      stats.batches++;
      stats.byVia[sender.via]++;
      stats.eventsSent += batch.events.length;
      const out = await sender.send(batch, { partial });
      if (out.kind === 'gave-up') stats.gaveUp++;
      const accepted = judge(batch, sender.via, partial, out);
      const n = accepted?.length ?? 0;
      stats.accepted += n;
      stats.rejected += batch.events.length - n;
      if (accepted && n > 0 && opts.keepAccepted !== false) acceptedEvents.push({ store: batch.store, events: accepted });
      if (duplicate && out.kind === 'accepted') {
        // The same batch again with the same key: must answer as before and count nothing more. A batch with
        // invalid events goes the same way it went (libs/client has no partial mode).
        const other = sender.via === 'http' ? client : http;
        const again = dupViaOther && other && batch.badIndexes.length === 0 ? other : sender;
        stats.duplicatesSent++;
        const out2 = await again.send(batch, { partial });
        if (out2.kind !== 'accepted' || out2.accepted !== out.accepted) {
          const answer =
            out2.kind === 'accepted' ? `accepted ${out2.accepted}` : out2.kind === 'rejected' ? `${out2.status} ${out2.code}` : 'nothing';
          mismatch(batch, `${again.via} (duplicate)`, `answered ${answer}, first answer accepted ${out.accepted}`);
        }
      }
      opts.onProgress?.(stats);
    }
  };
  const done = Promise.all(Array.from({ length: opts.concurrency ?? 4 }, () => worker()))
    .then(() => stats)
    .finally(() => Promise.all([http?.close(), client?.close()]));
  return { stats, accepted: acceptedEvents, done };
}

/** loadTo a running fleet: HTTP to its collector with each store's ingest key, libs/client on its queues. */
export function loadFleet(f: Fleet, opts: RunLoadOptions) {
  const http = { url: f.app('collector').url, keyOf: (s: string) => f.keys[s]!.ingest };
  return loadTo({ stores: f.stores, http, client: f.clientTarget() }, opts);
}
