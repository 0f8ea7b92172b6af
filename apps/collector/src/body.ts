import type { EventError } from '@tally/schema';
import type { FastifyInstance } from 'fastify';
import { HttpProblem } from '@tally/http';

export const JSON_TYPE = 'application/json';
export const NDJSON_TYPE = 'application/x-ndjson';

/** A parsed events body: the items in order; for NDJSON, lines that are not JSON are `undefined` with an error. */
export interface EventsBody {
  items: unknown[];
  lineErrors: EventError[];
}

export interface BodyLimits {
  maxEvents: number;
  maxBodyBytes: number;
}

/**
 * Replaces Fastify's parsers with the two the collector takes: a JSON array of events, or NDJSON (one event per
 * line, blank lines ignored). Anything else is 415. Bodies over MAX_BODY_BYTES are 413 before they are read in
 * full; more events than MAX_EVENTS_PER_REQUEST is 413 (NDJSON: before any line is parsed); none is 400.
 */
export function registerEventParsers(app: FastifyInstance<any, any, any, any, any>, limits: BodyLimits): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(JSON_TYPE, { parseAs: 'string', bodyLimit: limits.maxBodyBytes }, (_req, body, done) => {
    try {
      done(null, parseJsonArray(body as string, limits.maxEvents));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  app.addContentTypeParser(NDJSON_TYPE, { parseAs: 'string', bodyLimit: limits.maxBodyBytes }, (_req, body, done) => {
    try {
      done(null, parseNdjson(body as string, limits.maxEvents));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
}

export function tooManyEvents(count: number, limit: number): HttpProblem {
  return new HttpProblem(
    413,
    'TALLY_ERR_TOO_MANY_EVENTS',
    `the request has ${count} events; MAX_EVENTS_PER_REQUEST is ${limit}: split it into smaller requests`,
    { field: 'body', extra: { limit, count } },
  );
}

const empty = () => new HttpProblem(400, 'TALLY_ERR_MALFORMED_BODY', 'the body is empty; send a JSON array of events', { field: 'body' });

/**
 * A batch with no events is refused, not answered 202 for nothing (the OpenAPI batch schema's `minItems: 1`): the
 * same 400 for `[]` and for an NDJSON body with no lines, before any batch id is made or anything is enqueued.
 */
const noEvents = (detail: string) => new HttpProblem(400, 'TALLY_ERR_MALFORMED_BODY', detail, { field: 'body' });

export function parseJsonArray(text: string, maxEvents: number): EventsBody {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    if (text.trim() === '') throw empty();
    throw new HttpProblem(400, 'TALLY_ERR_MALFORMED_BODY', `the body is not valid JSON: ${(err as Error).message}`, { field: 'body' });
  }
  if (!Array.isArray(parsed)) {
    const got = parsed === null ? 'null' : typeof parsed === 'object' ? 'an object' : `a ${typeof parsed}`;
    throw new HttpProblem(
      400,
      'TALLY_ERR_MALFORMED_BODY',
      `the body must be a JSON array of events, got ${got} (for one event per line use Content-Type: ${NDJSON_TYPE})`,
      { field: 'body' },
    );
  }
  if (parsed.length === 0) throw noEvents('the batch is empty: it must hold at least 1 event');
  if (parsed.length > maxEvents) throw tooManyEvents(parsed.length, maxEvents);
  return { items: parsed, lineErrors: [] };
}

export function parseNdjson(text: string, maxEvents: number): EventsBody {
  const lines = text.split('\n');
  let count = 0;
  for (const line of lines) if (line.trim() !== '') count++;
  if (count === 0) throw noEvents('the body is empty: a batch must hold at least 1 event, one JSON object per line');
  if (count > maxEvents) throw tooManyEvents(count, maxEvents);
  const items: unknown[] = [];
  const lineErrors: EventError[] = [];
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    if (line.trim() === '') continue;
    try {
      items.push(JSON.parse(line));
    } catch (err) {
      lineErrors.push({ index: items.length, field: '(event)', reason: `line ${n + 1} is not valid JSON: ${(err as Error).message}` });
      items.push(undefined);
    }
  }
  return { items, lineErrors };
}
