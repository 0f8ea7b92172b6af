import { createHash } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { finished, Transform } from 'node:stream';
import compress from '@fastify/compress';
import helmet from '@fastify/helmet';
import { registerOpsRoutes, throttleLog, type ReadyCheck } from '@tally/observability';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods, RequestPayload } from 'fastify';
import fp from 'fastify-plugin';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import sjson from 'secure-json-parse';
import { unauthorized } from './auth';
import { createHttpDurationHistogram } from './http-metrics';
import { HttpProblem, problemBody, PROBLEM_TYPE, timesGiven, unavailable, type ProblemCode } from './problem';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Adds a word to the 400 for an unknown query parameter or body field: where its value goes instead. */
    unknownHint?: (name: string, input: Record<string, unknown>) => string | undefined;
  }
}

/** Routes that answer while the app is closing: probes must see it (readyz says not ready). */
export const OPS_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * Request body encodings the edge decompresses, named in any case (RFC 9110 §8.4.1). The body limit applies to the
 * decompressed bytes, and to the compressed bytes as sent (wireLimited).
 */
export const REQUEST_ENCODINGS = ['gzip', 'br'] as const;

/** The headers that describe a request body: a route that takes none sees them as absent (the edge's preParsing). */
const BODY_HEADERS = ['content-type', 'content-length', 'content-encoding', 'transfer-encoding'] as const;

/** At most this many entries of an `errors` list are sent; `errorCount` says how many there were. */
export const MAX_LISTED_ERRORS = 100;

export interface EdgeOptions {
  registry: Registry;
  /** /readyz: the app can do its work (and is not closing; the edge checks that). */
  ready: ReadyCheck;
  /**
   * True once shutdown began: every route but the probes answers 503 TALLY_ERR_SHUTTING_DOWN with Retry-After and
   * closes the connection (so does app.close(), from its start: Fastify's own bare 503 is off, see createHttpApp).
   */
  isClosing: () => boolean;
  /** The app as messages name it: "this collector is shutting down". */
  appName: string;
  /** What a 404 should point to, e.g. "events go to POST /v1/events". */
  notFoundHint: string;
  /** Names the body limit in a 413 (e.g. "MAX_BODY_BYTES"). */
  bodyLimitName?: string;
  /** The content types the app takes, for the 415 message. */
  mediaTypes: string[];
  /** The app's own errors as problems; undefined lets the edge decide (a 500 for anything unknown). */
  mapError?: (err: FastifyError, req: FastifyRequest) => HttpProblem | undefined;
  /** Sees every problem before it is sent (metrics). */
  onProblem?: (problem: HttpProblem, req: FastifyRequest) => void;
  /** Serves an unmatched request before the 404 (the dashboard's deep links); returns true when it answered. */
  notFound?: (req: FastifyRequest, reply: FastifyReply) => boolean;
  /**
   * One line per request (method, route, path without query string, status, ms): at info for an error answer (4xx,
   * 5xx), at debug for the rest, so a dashboard polling every few seconds does not fill the log. Default false.
   */
  logRequests?: boolean;
  /** METRICS_TOKEN: `/metrics` answers only requests bearing it (401 problem otherwise); unset = open. */
  metricsToken?: string | undefined;
}

/**
 * Tally's HTTP edge, shared by the collector and the query API: one RFC 9457 problem format for every 4xx and
 * 5xx, the closing 503, the request-duration metric, request logs without query strings (a key in
 * `?access_token=` never reaches a log), security headers, gzip/br request bodies with the body limit applied
 * after decompression (a route without a body schema ignores a body within the limit), `100 Continue` only for a body
 * it is about to read (never for one declared over the limit), and /healthz, /readyz and /metrics. Register it first,
 * before the routes.
 */
export const tallyEdge = fp(
  async (app: FastifyInstance, opts: EdgeOptions) => {
    const httpDuration = createHttpDurationHistogram(opts.registry);
    const warnings = throttleLog(app.log);

    await app.register(helmet, {
      contentSecurityPolicy: {
        // The dashboard is same-origin JS and CSS; nothing may frame it (it holds a read key).
        directives: { 'frame-ancestors': ["'none'"], 'upgrade-insecure-requests': null },
      },
      frameguard: { action: 'deny' },
      // The apps serve plain HTTP behind whatever terminates TLS; HSTS is that proxy's call.
      strictTransportSecurity: false,
    });
    await app.register(compress, {
      globalCompression: false,
      requestEncodings: [...REQUEST_ENCODINGS],
      onUnsupportedRequestEncoding: (encoding: string) =>
        new HttpProblem(
          415,
          'TALLY_ERR_UNSUPPORTED_ENCODING',
          `Content-Encoding ${JSON.stringify(encoding)} is not supported; send the body uncompressed or as ${REQUEST_ENCODINGS.join(' or ')}`,
          { field: 'content-encoding' },
        ),
      // The plugin copies this error's own members onto the zlib error it hands on; toProblem answers the carried problem.
      onInvalidRequestPayload: (encoding: string, _req: FastifyRequest, err: Error) => {
        // wireLimited's 413, handed to the decompressor: it stays what it is (the plugin assigns it onto itself).
        if ((err as { problem?: unknown }).problem instanceof HttpProblem) return err;
        const detail = `the body is not valid ${encoding} data (Content-Encoding: ${encoding}): ${err.message}`;
        const problem = new HttpProblem(400, 'TALLY_ERR_MALFORMED_BODY', detail, { field: 'content-encoding' });
        return Object.assign(new Error(detail), { statusCode: 400, problem });
      },
    });

    // Expect: 100-continue. Node answers 100 Continue at once unless the server has a `checkContinue` listener: with
    // this one the request is routed as any other, and its 100 waits for the point where its body is read (below).
    app.server.on('checkContinue', (raw: IncomingMessage, res: ServerResponse) => {
      awaitingContinue.add(raw);
      app.server.emit('request', raw, res);
    });

    // Before @fastify/compress's own preParsing (a route's hooks run after the app's): it sees the coding in lower
    // case, and reads a compressed body through a count of the bytes sent.
    app.addHook('preParsing', (req, reply, payload, done) => {
      // A request that awaits 100 Continue past the hooks that could refuse it (a key check, a rate limit) gets it
      // here, unless its body is declared over the limit (the 413 below or Fastify's, without reading it) or its
      // route is unknown (its 404 or 405): a body refused is never invited. An answer sent without the 100 closes the
      // connection (Node's rule), so that a body the client sends anyway is never read as the next request.
      if (awaitingContinue.delete(req.raw) && !req.is404 && !declaredTooLarge(req)) reply.raw.writeContinue();
      // A route that takes no body (no body schema: the GETs and DELETEs) ignores one sent anyway (Node discards it
      // after the answer): neither its Content-Type nor its Content-Encoding can refuse the request. Fastify and
      // @fastify/compress see the body headers as absent; req.raw.headers keeps them. (Its size counts: the edge's
      // onRequest.)
      if (!req.routeOptions.schema?.body) {
        const chunked = req.headers['transfer-encoding'];
        if (BODY_HEADERS.some((name) => req.headers[name] !== undefined))
          req.headers = Object.fromEntries(BODY_HEADERS.map((name) => [name, undefined]));
        // An unknown route's body is left unread: its 404 or 405 closes the connection (the edge's onSend).
        if (chunked === undefined || req.is404) return done(null, payload);
        // A chunked body has no size to check first, and Node would discard it after the answer however long it
        // ran: it is read (and dropped) before the route runs, counted as it comes, and a 413 once past the limit.
        const limit = req.routeOptions.bodyLimit;
        const counted = wireLimited(req.raw, limit, () => unwantedBodyTooLarge(req, opts.bodyLimitName));
        keepBodyStream(req, counted);
        finished(counted.resume(), (err) => {
          if (!err) return done(null, payload);
          reply.header('connection', 'close');
          // A client gone before the end of its body: a 400, as Fastify's body reader answers it (to no one).
          done(Object.assign(err, { statusCode: (err as { statusCode?: number }).statusCode ?? 400 }));
        });
        return;
      }
      const sent = req.headers['content-encoding'];
      if (sent === undefined) return done(null, payload);
      const encoding = sent.trim().toLowerCase();
      req.raw.headers['content-encoding'] = encoding;
      if (!(REQUEST_ENCODINGS as readonly string[]).includes(encoding)) return done(null, payload);
      // Its bytes as sent count against the body limit too: never needed past it, and the count bounds the reading of a
      // body that decompresses to (nearly) nothing (empty gzip members), which the count of decompressed bytes never stops.
      const limit = req.routeOptions.bodyLimit;
      const tooLarge = () =>
        bodyTooLarge(
          limit,
          opts.bodyLimitName,
          (name) =>
            `the compressed request body is larger than ${name}, the limit of a compressed body too: split it into smaller requests`,
        );
      if (declaredTooLarge(req)) {
        reply.header('connection', 'close'); // as Fastify does for a body it will not read
        return done(tooLarge());
      }
      const counted = wireLimited(req.raw, limit, tooLarge);
      keepBodyStream(req, counted);
      done(null, counted);
    });
    // Last of every route's preParsing hooks (@fastify/compress puts its own first): keeps the stream the body parser
    // reads, the decompressor of a compressed body, to be ended with the answer (discardBody).
    app.addHook('onRoute', (route) => {
      const keep = (req: FastifyRequest, _reply: FastifyReply, payload: RequestPayload, done: (err: null, p: RequestPayload) => void) => {
        if (payload !== req.raw) keepBodyStream(req, payload);
        done(null, payload);
      };
      route.preParsing = [...(route.preParsing === undefined ? [] : [route.preParsing].flat()), keep] as typeof route.preParsing;
    });

    // JSON bodies only (an app with other types replaces the parsers): text/plain is 415, not a string that fails
    // validation, and a refused body says why (Fastify's own JSON parser drops the reason).
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, raw, done) => {
      try {
        const body = bodyText(raw as Buffer, req.headers['content-type']);
        if (body === '') throw new HttpProblem(400, 'TALLY_ERR_MALFORMED_BODY', 'the body is empty; send a JSON body', { field: 'body' });
        done(null, sjson.parse(body, null, { protoAction: 'error', constructorAction: 'error' }));
      } catch (err) {
        if (err instanceof HttpProblem) return done(err, undefined);
        // secure-json-parse refuses `__proto__` and `constructor.prototype` keys: say so, not "not valid JSON".
        const detail = /forbidden prototype property/.test((err as Error).message)
          ? 'the body has a "__proto__" or "constructor.prototype" key, which is not accepted'
          : `the body is not valid JSON: ${(err as Error).message}`;
        done(new HttpProblem(400, 'TALLY_ERR_MALFORMED_BODY', detail, { field: 'body' }), undefined);
      }
    });

    // Closing also once app.close() began, the flag set or not: a request on a kept-alive connection still reaches the routes.
    let appClosing = false;
    app.addHook('preClose', async () => {
      appClosing = true;
    });
    const isClosing = () => appClosing || opts.isClosing();
    // The app's first onRequest hook (registered with the edge, before any other plugin, scope or route hook).
    app.addHook('onRequest', async (req, reply) => {
      // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 (createHttpApp leaves it to the edge, for the problem).
      if (req.raw.headers.host === undefined && req.raw.httpVersionMajor === 1 && req.raw.httpVersionMinor === 1) {
        reply.header('connection', 'close');
        throw new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', 'an HTTP/1.1 request needs a Host header', { field: 'host' });
      }
      if (isClosing() && !OPS_ROUTES.has(req.routeOptions.url ?? '')) {
        reply.header('connection', 'close');
        throw new HttpProblem(503, 'TALLY_ERR_SHUTTING_DOWN', `this ${opts.appName} is shutting down; retry`, {
          headers: { 'retry-after': '1' },
        });
      }
      // A body sent to a route that takes none counts as on a route that takes one: declared over the body limit, it is
      // a 413 at once, unread, the connection closed, before the hooks that could refuse the request otherwise (a key
      // check, a rate limit). An unknown route's is left to its 404 or 405.
      if (!req.routeOptions.schema?.body && !req.is404 && declaredTooLarge(req)) {
        reply.header('connection', 'close');
        throw unwantedBodyTooLarge(req, opts.bodyLimitName);
      }
    });
    // An answer sent with a body still unread that Node would read and drop after it, past the body limit (declared
    // over it) or for as long as it runs (chunked): the request refused before its body was read (a 401, a 429, a 404).
    // The connection is closed instead, as for a 413.
    app.addHook('onSend', async (req, reply) => {
      if (!req.raw.complete && (req.raw.headers['transfer-encoding'] !== undefined || declaredTooLarge(req)))
        reply.header('connection', 'close');
    });
    app.addHook('onResponse', async (req, reply) => {
      discardBody(req);
      const route = req.routeOptions.url ?? 'unmatched';
      httpDuration.observe({ route, method: req.method, status_code: String(reply.statusCode) }, reply.elapsedTime / 1_000);
      if (opts.logRequests) {
        const ms = Math.round(reply.elapsedTime * 10) / 10;
        const line = { method: req.method, route, path: loggedPath(req), statusCode: reply.statusCode, ms };
        if (reply.statusCode >= 400) req.log.info(line, 'request');
        else req.log.debug(line, 'request');
      }
    });

    app.setErrorHandler((err: FastifyError, req, reply) => {
      discardBody(req); // a body refused (413, 400) is read no further
      const problem = opts.mapError?.(err, req) ?? toProblem(err, req, opts);
      opts.onProblem?.(problem, req);
      if (problem.code === 'TALLY_ERR_INTERNAL') {
        req.log.error({ err }, 'request failed'); // unexpected: the only errors logged with their stack
      } else if (problem.statusCode >= 500 && !OPS_ROUTES.has(req.routeOptions.url ?? '')) {
        // (/readyz's 503 is no failure of its own: its ready check logs why it is not ready.)
        const cause = problem.cause ?? (err === problem ? undefined : err);
        warnings.log('warn', problem.code, { code: problem.code, cause: (cause as Error | undefined)?.message }, problem.message);
      } else {
        req.log.debug({ code: problem.code, status: problem.statusCode, field: problem.field }, problem.message);
      }
      return sendProblem(reply, problem);
    });
    app.setNotFoundHandler((req, reply) => {
      // A known path asked with another method is 405 with Allow; a catch-all route (the dashboard's `/*`) knows no path.
      const url = pathOf(req.url);
      const params = app.supportedMethods.map((method) => app.findRoute({ method: method as HTTPMethods, url })?.params);
      const allow = app.supportedMethods.filter((_, i) => params[i] && !('*' in params[i])).join(', ');
      const detail = `${url} takes ${allow}, not ${req.method}`;
      if (allow) return sendProblem(reply, new HttpProblem(405, 'TALLY_ERR_METHOD_NOT_ALLOWED', detail, { headers: { allow } }));
      if (opts.notFound?.(req, reply)) return reply;
      const problem = new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', `no route ${req.method} ${url}; ${opts.notFoundHint}`);
      return sendProblem(reply, problem);
    });

    registerOpsRoutes(app, {
      registry: opts.registry,
      ready: async () => !isClosing() && (await opts.ready()),
      metricsToken: opts.metricsToken,
      unauthorized,
      unavailable: (detail) => unavailable(detail, 1),
    });
  },
  { name: 'tally-edge', fastify: '5.x' },
);

/** A 413 for a body over `limit`: `detail` says which, given the limit as named ("MAX_BODY_BYTES (1048576 bytes)"). */
function bodyTooLarge(limit: number, limitName: string | undefined, detail: (limit: string) => string): HttpProblem {
  const name = limitName ? `${limitName} (${limit} bytes)` : `${limit} bytes`;
  return new HttpProblem(413, 'TALLY_ERR_BODY_TOO_LARGE', detail(name), { field: 'body', extra: { limit } });
}

/**
 * The 413 for a body sent to a route that takes none: one over the body limit is refused as on a route that takes a
 * body, not read and discarded for as long as it runs.
 */
function unwantedBodyTooLarge(req: FastifyRequest, limitName: string | undefined): HttpProblem {
  const route = `${req.method} ${req.routeOptions.url ?? pathOf(req.url)}`;
  return bodyTooLarge(
    req.routeOptions.bodyLimit,
    limitName,
    (name) => `${route} takes no body, and this one is larger than ${name}: send none`,
  );
}

/** Requests sent with Expect: 100-continue that were not answered 100 yet (the edge's checkContinue listener). */
const awaitingContinue = new WeakSet<IncomingMessage>();

/** The request's Content-Length (as sent) is over its route's body limit. */
const declaredTooLarge = (req: FastifyRequest) => Number(req.raw.headers['content-length']) > req.routeOptions.bodyLimit;

/** The streams a request's body is read through (the count of bytes sent, the decompressor), until the answer. */
const bodyStreams = new WeakMap<FastifyRequest, RequestPayload[]>();

function keepBodyStream(req: FastifyRequest, stream: RequestPayload): void {
  const kept = bodyStreams.get(req);
  if (kept) kept.push(stream);
  else bodyStreams.set(req, [stream]);
}

/**
 * Destroys a request's body streams not read to their end: a body the parser left at the limit (a 413) or that no
 * route read. Fastify's body reader only stops listening, and a decompressor left so would go on inflating what it
 * holds, then stay open for good once the connection closes.
 */
function discardBody(req: FastifyRequest): void {
  for (const stream of bodyStreams.get(req) ?? []) if (!stream.readableEnded && !stream.destroyed) stream.destroy();
  bodyStreams.delete(req);
}

/**
 * The request's bytes as sent, passed on as they come until more than `limit` have come: then the stream fails with
 * `tooLarge()`'s problem, which the decompressor reading it hands to the body parser (a 413). `raw` is piped, not
 * put in a pipeline, so that the failure leaves the connection open for the answer. A client gone before the end of
 * its body (an error, or a close) ends it, and so the decompressor reading it.
 */
function wireLimited(raw: IncomingMessage, limit: number, tooLarge: () => HttpProblem): Transform {
  let received = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      if (received <= limit) return callback(null, chunk);
      const problem = tooLarge();
      callback(Object.assign(new Error(problem.message), { statusCode: 413, problem }));
    },
  });
  raw.on('error', (err) => counted.destroy(err)); // the client went away
  raw.on('close', () => {
    if (!raw.readableEnded) counted.destroy(); // closed before its end: `pipe` passes on only an end
  });
  return raw.pipe(counted);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A request body's text: UTF-8, the only charset taken (RFC 8259 §8.1), with one leading byte order mark dropped
 * (TextDecoder does). A body that is not UTF-8 is a 400 naming its first bad byte: read as U+FFFD, bytes that differ
 * would count as one value. A Content-Type naming another charset is a 415.
 */
export function bodyText(body: Uint8Array, contentType: string | undefined): string {
  const charset = contentType?.includes(';') ? CHARSET.exec(contentType)?.[2] : undefined;
  if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
    throw new HttpProblem(
      415,
      'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE',
      `charset ${JSON.stringify(charset)} is not supported: send the body as UTF-8 (charset=utf-8, or none)`,
      { field: 'content-type' },
    );
  }
  try {
    return UTF8.decode(body);
  } catch {
    const at = invalidUtf8At(body);
    const where = at < 0 ? '' : `: byte 0x${body[at]!.toString(16).padStart(2, '0')} at offset ${at}`;
    throw new HttpProblem(400, 'TALLY_ERR_MALFORMED_BODY', `the body is not valid UTF-8${where}; send text as UTF-8`, { field: 'body' });
  }
}

/** A media type's charset parameter, quoted or not. */
const CHARSET = /;\s*charset\s*=\s*("?)([^";\s]*)\1/i;

/** The offset of the first byte that does not start a well-formed UTF-8 sequence, or -1. */
function invalidUtf8At(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    const c = b[i]!;
    const tail = c < 0x80 ? 0 : c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
    if (tail < 0) return i;
    // The second byte's range rules out overlong forms, surrogates and code points past U+10FFFF.
    const low = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const high = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    for (let k = 1; k <= tail; k++) {
      const d = b[i + k];
      if (d === undefined || d < (k === 1 ? low : 0x80) || d > (k === 1 ? high : 0xbf)) return i;
    }
    i += tail + 1;
  }
  return -1;
}

/**
 * A list of errors as an answer carries it: `errors`, cut to its first MAX_LISTED_ERRORS entries, with `errorCount`
 * the full number when it was cut (problems, and answers such as the collector's partial 202).
 */
export function listedErrors<T>(errors: readonly T[]): { errors: T[]; errorCount?: number } {
  return errors.length > MAX_LISTED_ERRORS
    ? { errors: errors.slice(0, MAX_LISTED_ERRORS), errorCount: errors.length }
    : { errors: errors as T[] };
}

/** Sends a problem: its status, headers and RFC 9457 body, with a long `errors` list cut to its first entries (listedErrors). */
export function sendProblem(reply: FastifyReply, p: HttpProblem): FastifyReply {
  const body = problemBody(p);
  const errors = body['errors'];
  if (Array.isArray(errors)) Object.assign(body, listedErrors(errors));
  return reply.code(p.statusCode).headers(p.headers).type(`${PROBLEM_TYPE}; charset=utf-8`).serializer(JSON.stringify).send(body);
}

const pathOf = (url: string) => url.split('?')[0]!;

/** A visitor id as logs name it: a hash prefix, so a log kept after the visitor's erasure holds no id in clear. */
export const visitorRef = (visitor: string) => `sha256:${createHash('sha256').update(visitor).digest('hex').slice(0, 12)}`;

/** The request's path for its log line, without the query string, a `visitor` path parameter as its visitorRef. */
function loggedPath(req: FastifyRequest): string {
  const params = req.params as Record<string, string> | undefined;
  const template = req.routeOptions.url;
  if (template === undefined || params?.['visitor'] === undefined) return pathOf(req.url);
  return template.replace(/:(\w+)/g, (_, name: string) =>
    name === 'visitor' ? visitorRef(params['visitor']!) : encodeURIComponent(params[name] ?? ''),
  );
}

/** Fastify's and the plugins' errors as problems; anything not understood is a 500. */
function toProblem(err: FastifyError, req: FastifyRequest, opts: EdgeOptions): HttpProblem {
  if (err instanceof HttpProblem) return err;
  const carried = (err as { problem?: unknown }).problem;
  if (carried instanceof HttpProblem) return carried;
  if (hasZodFastifySchemaValidationErrors(err)) {
    const issue = err.validation[0]!;
    const where = err.validationContext === 'body' ? 'body' : err.validationContext === 'headers' ? 'headers' : 'query';
    const path = issue.instancePath.split('/').filter(Boolean);
    const unknownKeys = (issue.params as { keys?: string[] }).keys;
    if (issue.keyword === 'unrecognized_keys' && unknownKeys?.length) {
      const schema = req.routeOptions.schema?.[where === 'query' ? 'querystring' : where] as { shape?: object } | undefined;
      const known = path.length === 0 && schema?.shape ? Object.keys(schema.shape) : [];
      const input = (where === 'query' ? req.query : req.body) as Record<string, unknown>;
      const hint = path.length === 0 ? req.routeOptions.config.unknownHint?.(unknownKeys[0]!, input) : undefined;
      const detail =
        `unknown ${where === 'body' ? 'field' : where === 'headers' ? 'header' : 'parameter'} ${JSON.stringify(unknownKeys[0])}` +
        (known.length > 0 ? `; known: ${known.join(', ')}` : '') +
        (hint ? `; ${hint}` : '');
      return new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', detail, { field: [...path, unknownKeys[0]!].join('.') });
    }
    const field = path.join('.') || where;
    // A member left out is "is required", not zod's "Invalid input: expected string, received undefined".
    const given = path.reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], req[where]);
    const missing = issue.keyword === 'invalid_type' && path.length > 0 && given === undefined;
    // A query parameter given twice where one value is expected says so (intQueryParam's too), not "got an array".
    const repeated =
      where === 'query' &&
      Array.isArray(given) &&
      (issue.keyword === 'invalid_value' || (issue.keyword === 'invalid_type' && (issue.params as IssueParams).expected !== 'array'));
    // A value outside an enum names the value given and the ones known, as an unknown parameter does.
    const values = (issue.params as { values?: unknown[] }).values;
    const detail = repeated
      ? `is given ${timesGiven(given.length)}; give it once`
      : issue.keyword === 'invalid_value' && values?.length
        ? given === undefined
          ? `is required, one of: ${values.join(', ')}`
          : typeof given === 'string'
            ? `unknown value ${JSON.stringify(given)}; known: ${values.join(', ')}`
            : `must be one of: ${values.join(', ')}; got ${shown(given)}`
        : missing
          ? 'is required'
          : (plainIssue(issue.keyword, issue.params as IssueParams, given) ?? issue.message);
    return new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', `${field}: ${detail}`, { field });
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const decompressed = req.headers['content-encoding'] ? ' once decompressed' : '';
      return bodyTooLarge(
        req.routeOptions.bodyLimit,
        opts.bodyLimitName,
        (name) => `the request body is larger than ${name}${decompressed}: split it into smaller requests`,
      );
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': {
      const sent = req.headers['content-type'];
      return new HttpProblem(
        415,
        'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE',
        `Content-Type must be ${opts.mediaTypes.join(' or ')} (got ${sent === undefined ? 'none' : JSON.stringify(sent)})`,
        { field: 'content-type' },
      );
    }
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    // With its headers, as Fastify's own error handler sends them (a 416's Content-Range), and the code of its status.
    const headers = (err as { headers?: Record<string, string> }).headers ?? {};
    const code = CODE_OF_STATUS[err.statusCode] ?? 'TALLY_ERR_BAD_REQUEST';
    return new HttpProblem(err.statusCode, code, err.message || STATUS_CODES[err.statusCode] || 'Error', { headers });
  }
  return new HttpProblem(500, 'TALLY_ERR_INTERNAL', `internal error; see the ${opts.appName} log`);
}

/** The code of a 4xx the edge does not map itself, where its status has one; any other is TALLY_ERR_BAD_REQUEST. */
const CODE_OF_STATUS: Partial<Record<number, ProblemCode>> = {
  401: 'TALLY_ERR_UNAUTHORIZED',
  403: 'TALLY_ERR_FORBIDDEN',
  404: 'TALLY_ERR_NOT_FOUND',
  405: 'TALLY_ERR_METHOD_NOT_ALLOWED',
  408: 'TALLY_ERR_REQUEST_TIMEOUT',
  409: 'TALLY_ERR_CONFLICT',
  413: 'TALLY_ERR_BODY_TOO_LARGE',
  415: 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE',
  429: 'TALLY_ERR_RATE_LIMITED',
  431: 'TALLY_ERR_HEADERS_TOO_LARGE',
};

interface IssueParams {
  origin?: string;
  expected?: string;
  minimum?: number | bigint;
  maximum?: number | bigint;
  inclusive?: boolean;
}

/** What was sent, short: a query parameter is always a string, a body member any JSON value. */
function shown(given: unknown): string {
  if (Array.isArray(given)) return 'an array';
  if (given !== null && typeof given === 'object') return 'an object';
  const text = typeof given === 'number' ? String(given) : (JSON.stringify(given) ?? String(given));
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/**
 * zod's bound and type issues in the words of the rest of the API ("must be at most 100, got 500"), naming what was
 * sent; undefined leaves zod's own message (refinements carry their own words).
 */
function plainIssue(keyword: string, params: IssueParams, given: unknown): string | undefined {
  if (keyword === 'invalid_type') {
    const expected = { int: 'a whole number', array: 'an array', object: 'an object', number: 'a number', string: 'a string' }[
      params.expected ?? ''
    ];
    if (!expected) return undefined;
    if (given === undefined) return 'is required';
    // JSON.parse reads 1e400 as Infinity, which z.number() refuses.
    if ((params.expected === 'number' || params.expected === 'int') && typeof given === 'number' && !Number.isFinite(given))
      return `must be a finite number, got ${shown(given)}`;
    return `must be ${expected}, got ${shown(given)}`;
  }
  if (keyword !== 'too_small' && keyword !== 'too_big') return undefined;
  const small = keyword === 'too_small';
  const bound = Number(small ? params.minimum : params.maximum);
  const plural = (unit: string) => `${bound} ${unit}${bound === 1 ? '' : 's'}`;
  const word = small ? 'at least' : 'at most';
  switch (params.origin) {
    case 'array':
      return `must have ${word} ${plural('item')}, got ${Array.isArray(given) ? given.length : shown(given)}`;
    case 'string':
      return `must be ${word} ${plural('character')} long`;
    case 'number':
    case 'int':
    case 'bigint':
      return `must be ${params.inclusive === false ? (small ? 'more than' : 'less than') : word} ${bound}, got ${shown(given)}`;
    default:
      return undefined;
  }
}
