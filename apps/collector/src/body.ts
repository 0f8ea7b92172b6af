import type { EventError } from '@tally/schema';
import type { FastifyInstance } from 'fastify';
import { bodyText, HttpProblem } from '@tally/http';

export const JSON_TYPE = 'application/json';
export const NDJSON_TYPE = 'application/x-ndjson';

/**
 * A parsed events body: the items in order. An item that cannot be taken is `undefined` with its error in
 * `lineErrors` (which stand for its validation errors): an NDJSON line that is not JSON, or an event whose `ts` or
 * `value` is a JSON number that does not read exactly (see inexactNumber).
 */
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
 * full; more events than MAX_EVENTS_PER_REQUEST is 413 (NDJSON: before any line is parsed); none is 400. The body is
 * read as bytes and decoded by bodyText: UTF-8 only (400 for bytes that are not, 415 for another declared charset),
 * a leading byte order mark dropped.
 */
export function registerEventParsers(app: FastifyInstance<any, any, any, any, any>, limits: BodyLimits): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(JSON_TYPE, { parseAs: 'buffer', bodyLimit: limits.maxBodyBytes }, (req, body, done) => {
    try {
      done(null, parseJsonArray(bodyText(body as Buffer, req.headers['content-type']), limits.maxEvents));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  app.addContentTypeParser(NDJSON_TYPE, { parseAs: 'buffer', bodyLimit: limits.maxBodyBytes }, (req, body, done) => {
    try {
      done(null, parseNdjson(bodyText(body as Buffer, req.headers['content-type']), limits.maxEvents));
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
  if (!mayHoldInexactNumber(text, parsed)) return { items: parsed, lineErrors: [] };
  // Rare (see mayHoldInexactNumber): parsed again, with a reviver that finds the events and fields.
  const inexact = new Map<object, InexactNumber[]>();
  const items = parseMarkingInexact(text, inexact) as unknown[];
  const lineErrors: EventError[] = [];
  for (let i = 0; i < items.length; i++) refuseInexact(items, i, inexact, lineErrors);
  return { items, lineErrors };
}

export function parseNdjson(text: string, maxEvents: number): EventsBody {
  const lines = text.split('\n');
  let count = 0;
  for (const line of lines) if (line.trim() !== '') count++;
  if (count === 0) throw noEvents('the body is empty: a batch must hold at least 1 event, one JSON object per line');
  if (count > maxEvents) throw tooManyEvents(count, maxEvents);
  const items: unknown[] = [];
  const itemLines: number[] = [];
  const lineErrors: EventError[] = [];
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    if (line.trim() === '') continue;
    itemLines.push(n);
    try {
      items.push(JSON.parse(line));
    } catch (err) {
      lineErrors.push({ index: items.length, field: '(event)', reason: `line ${n + 1} is not valid JSON: ${(err as Error).message}` });
      items.push(undefined);
    }
  }
  if (mayHoldInexactNumber(text, items)) {
    // Rare (see mayHoldInexactNumber): the lines that hold one are parsed again, with a reviver.
    const inexact = new Map<object, InexactNumber[]>();
    for (let i = 0; i < items.length; i++) {
      const line = lines[itemLines[i]!]!;
      if (items[i] === undefined || !mayHoldInexactNumber(line, [items[i]])) continue;
      items[i] = parseMarkingInexact(line, inexact);
      refuseInexact(items, i, inexact, lineErrors);
    }
    lineErrors.sort((a, b) => a.index - b.index);
  }
  return { items, lineErrors };
}

/** Replaces item `i` with `undefined` and records its errors when the slow parse found inexact numbers in it. */
function refuseInexact(items: unknown[], i: number, inexact: Map<object, InexactNumber[]>, errors: EventError[]): void {
  const found = inexact.get(items[i] as object);
  if (found === undefined) return;
  for (const f of found) errors.push({ index: i, field: f.field, reason: f.reason });
  items[i] = undefined;
}

/** Significant digits a double holds for any decimal (DBL_DIG): up to this many, a number in its range reads back as sent. */
const EXACT_DIGITS = 15;

const isDigit = (c: number) => c >= 48 && c <= 57;

/**
 * Whether the JSON number whose mantissa starts at `at` does not read exactly: taken whole (sign, fraction,
 * exponent) if it stands where JSON has a value, after `[`, `,` or `:` (and blanks), so that digits inside a string
 * (an id, a timestamp) are passed over unless a `:` or `,` precedes them there.
 */
function inexactAt(text: string, at: number): boolean {
  let start = at;
  if (start > 0 && text.charCodeAt(start - 1) === 45) start--;
  for (let i = start - 1; ; i--) {
    const c = i < 0 ? 91 : text.charCodeAt(i);
    if (c === 32 || c === 9 || c === 10 || c === 13) continue;
    if (c !== 58 && c !== 44 && c !== 91) return false;
    break;
  }
  const n = text.length;
  let end = at;
  while (end < n && isDigit(text.charCodeAt(end))) end++;
  if (end < n && text.charCodeAt(end) === 46) for (end++; end < n && isDigit(text.charCodeAt(end));) end++;
  if (end < n && (text.charCodeAt(end) | 32) === 101) {
    end++;
    if (end < n && (text.charCodeAt(end) === 43 || text.charCodeAt(end) === 45)) end++;
    while (end < n && isDigit(text.charCodeAt(end))) end++;
  }
  const source = text.slice(start, end);
  return inexactNumber('value', source, Number(source)) !== undefined;
}

/**
 * The fast path's check of every body, after JSON.parse: whether it may hold a `ts` or `value` number that does not
 * read exactly (inexactNumber), so that only then is it parsed again with a reviver (several parses' worth), which
 * decides and finds the events. A body whose events have no number in ts or value holds none. Otherwise the text is
 * searched for the candidates, each read and checked (inexactAt):
 * - a fraction with 16 or more digits around its `.`, whatever its exponent (how decimal types print);
 * - an `E-` or `e-` exponent with 16 or more mantissa digits or 3 exponent digits (Java's BigDecimal, Python's
 *   Decimal, a hand-written 19999999999999999e-15, 1e-400 that reads as 0).
 * String#indexOf skips the text between candidates at native speed (`e-` is the dearest: `e` ends many keys and
 * names), where a regular expression over the whole body cost a quarter of JSON.parse's time.
 */
export function mayHoldInexactNumber(text: string, items: readonly unknown[]): boolean {
  let numbers = false;
  for (let i = 0; i < items.length && !numbers; i++) {
    const e = items[i];
    if (typeof e !== 'object' || e === null) continue;
    const { ts, value } = e as { ts?: unknown; value?: unknown };
    numbers = typeof ts === 'number' || typeof value === 'number';
  }
  if (!numbers) return false;
  const n = text.length;
  for (let p = text.indexOf('.'); p !== -1; p = text.indexOf('.', p + 1)) {
    let b = p + 1;
    while (b < n && isDigit(text.charCodeAt(b))) b++;
    let a = p;
    while (a > 0 && isDigit(text.charCodeAt(a - 1))) a--;
    if (a !== p && b - a - 1 > EXACT_DIGITS && inexactAt(text, a)) return true;
  }
  return exponentCandidate(text, 'E-') || exponentCandidate(text, 'e-');
}

/** Whether `text` holds a number with the exponent `marker` (`E-`, `e-`) that does not read exactly. */
function exponentCandidate(text: string, marker: string): boolean {
  const n = text.length;
  for (let p = text.indexOf(marker); p !== -1; p = text.indexOf(marker, p + 2)) {
    let a = p;
    let digits = 0;
    for (; a > 0; a--) {
      const c = text.charCodeAt(a - 1);
      if (isDigit(c)) digits++;
      else if (c !== 46) break;
    }
    if (digits === 0 || !isDigit(text.charCodeAt(a))) continue;
    let b = p + 2;
    while (b < n && isDigit(text.charCodeAt(b))) b++;
    if ((digits > EXACT_DIGITS || b - p - 2 >= 3) && inexactAt(text, a)) return true;
  }
  return false;
}

/** A number of an event's `ts` or `value` that does not read exactly, found by the slow parse. */
interface InexactNumber {
  field: string;
  reason: string;
}

/**
 * JSON.parse with a reviver that reads each `ts` and `value` number's source text (JSON.parse source text access,
 * Node >= 21) and records, by the object holding it, those that do not read exactly. Numbers elsewhere are not
 * looked at: no field but ts and value takes a number, so validation refuses them anyway.
 */
function parseMarkingInexact(text: string, found: Map<object, InexactNumber[]>): unknown {
  return JSON.parse(text, function (this: object, key: string, value: unknown, context?: { source?: string }) {
    if (typeof value === 'number' && (key === 'value' || key === 'ts') && context?.source !== undefined) {
      const reason = inexactNumber(key, context.source, value);
      if (reason !== undefined) {
        const list = found.get(this);
        if (list) list.push({ field: key, reason });
        else found.set(this, [{ field: key, reason }]);
      }
    }
    return value;
  });
}

/** A JSON number's text, or a double's String(): sign, integer digits, fraction digits, exponent. */
const NUMBER_TEXT = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

/** The decimal value of a number's text as significant digits and a power of ten: `19.990` -> 1999e-2; zero -> ''. */
function decimalOf(text: string): { neg: boolean; digits: string; exp: number } | undefined {
  const m = NUMBER_TEXT.exec(text);
  if (!m) return undefined;
  const frac = m[3] ?? '';
  const all = `${m[2]}${frac}`.replace(/^0+/, '');
  const digits = all.replace(/0+$/, '');
  if (digits === '') return { neg: false, digits: '', exp: 0 };
  return { neg: m[1] === '-', digits, exp: Number(m[4] ?? 0) - frac.length + (all.length - digits.length) };
}

/**
 * Why the JSON number `source`, parsed to `value`, is refused for `field`, or undefined when it reads exactly: its
 * double prints back (String, as validation reads it) as the same decimal value, so what is counted is what was sent
 * (`20.0`, `2e1`, and 34.989999999999995, the 17 digits of a float sum, whose decimals validation then judges).
 * 19.999999999999999 would be counted as 20 and 1000000000000.00001 pass as the maximum; 1e-400 reads as 0: the
 * sender is told to send a decimal string, which is read digit by digit. Whole numbers (no `.`, no negative
 * exponent) are left to validation: one that does not read exactly has 16 or more digits, so is 1e15 or more, which
 * validation refuses for ts (in the future) and value (over the maximum) with a better reason; so is a value that is
 * not finite.
 */
export function inexactNumber(field: string, source: string, value: number): string | undefined {
  if (!Number.isFinite(value) || !/\.|[eE]-/.test(source)) return undefined;
  const sent = decimalOf(source);
  const read = decimalOf(String(value));
  if (sent === undefined || (read !== undefined && read.digits === sent.digits && read.exp === sent.exp && read.neg === sent.neg)) {
    return undefined;
  }
  const why =
    sent.digits.length > EXACT_DIGITS
      ? `has ${sent.digits.length} significant digits, more than the ${EXACT_DIGITS} a JSON number holds exactly`
      : 'is beyond the range a JSON number holds exactly';
  const fix =
    field === 'value'
      ? `send it as a decimal string: "${source}"`
      : `${field} takes epoch milliseconds as a whole number, or an ISO-8601 timestamp string`;
  return `${why}: ${source} would be read as ${String(value)}; ${fix}`;
}
