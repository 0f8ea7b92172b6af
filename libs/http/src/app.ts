import { maxHeaderSize, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { fastify, LogController, type FastifyInstance, type RawServerDefault } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { sendProblem, tallyEdge, type EdgeOptions } from './edge.plugin';
import { createUnparsedCounter } from './http-metrics';
import { HttpProblem, problemBody, PROBLEM_TYPE } from './problem';

/** A client that trickles a request (its headers and body) this long is cut off with a 408. */
const REQUEST_TIMEOUT_MS = 30_000;

export type TallyHttpApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger, ZodTypeProvider>;

export interface HttpAppOptions extends EdgeOptions {
  log: Logger;
  /** Largest request body, in bytes once decompressed. Default Fastify's 1 MiB. */
  bodyLimit?: number;
}

/**
 * A Fastify app with Tally's edge registered (see {@link tallyEdge}) and zod schemas for routes. Fastify's own
 * request lines are off (they carry the full URL); the edge logs requests when asked to.
 */
export async function createHttpApp(opts: HttpAppOptions): Promise<TallyHttpApp> {
  const unparsed = createUnparsedCounter(opts.registry);
  const app = fastify({
    loggerInstance: opts.log,
    logController: new LogController({ disableRequestLogging: true }),
    ...(opts.bodyLimit !== undefined ? { bodyLimit: opts.bodyLimit } : {}),
    requestTimeout: REQUEST_TIMEOUT_MS,
    // Node looks for requests past requestTimeout this often (its default 30 s would make the 408's 30 s up to 60).
    // A request without Host reaches the edge, which answers it a 400 problem (Node's own 400 has no body).
    http: { connectionsCheckingInterval: 1_000, requireHostHeader: false },
    // Ids are up to 128 characters (a path value base64url-encoded, up to 171): Fastify's default of 100 refused a
    // long one with a 400 before its route could check it.
    routerOptions: { maxParamLength: 512 },
    // A request that reaches a closing app (on a kept-alive connection) gets the edge's problem 503 with Retry-After
    // (its onRequest hook), not Fastify's bare `{"error":"Service Unavailable"}`; the probes still answer.
    return503OnClosing: false,
    // Errors of the router itself (a URL whose percent-encoding is broken), before any hook: a problem like the rest.
    frameworkErrors: (err, _req, reply) => sendProblem(reply, new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', err.message, { field: 'url' })),
    // Errors of Node's HTTP parser, before there is a request: problems too, not Fastify's own JSON.
    clientErrorHandler: clientErrorHandler(unparsed, opts.logRequests === true),
  }).withTypeProvider<ZodTypeProvider>();
  app.server.on('checkExpectation', expectationFailed(app.log, unparsed, opts.logRequests === true));
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(tallyEdge, opts);
  return app;
}

/** Node's error for a request the HTTP parser refused (llhttp's `HPE_*` code and reason) or one not received in time. */
type ClientError = Error & { code?: string; reason?: string };

/**
 * What Node's HTTP parser refused, as a problem: a request line and headers over `maxHeaderSize` (a long URL or
 * Idempotency-Key) is 431, a request not received in full within REQUEST_TIMEOUT_MS 408, anything else (a raw space or
 * non-ASCII character in the URL, a malformed header) 400 with the parser's reason.
 */
function clientErrorProblem(err: ClientError): HttpProblem {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new HttpProblem(
        431,
        'TALLY_ERR_HEADERS_TOO_LARGE',
        `the request line and headers are larger than ${maxHeaderSize} bytes in all: shorten the URL or the headers`,
        { field: 'headers' },
      );
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new HttpProblem(408, 'TALLY_ERR_REQUEST_TIMEOUT', `the request did not arrive in full within ${REQUEST_TIMEOUT_MS / 1_000} s`);
    case 'HPE_INVALID_URL':
      return new HttpProblem(
        400,
        'TALLY_ERR_BAD_REQUEST',
        `the URL is not valid (${err.reason ?? err.message}): percent-encode every character that is not visible ASCII, e.g. ２ as %EF%BC%92`,
        { field: 'url' },
      );
    default:
      return new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', `the request is not valid HTTP/1.1 (${err.reason ?? err.code ?? err.message})`);
  }
}

/**
 * The server's `checkExpectation` listener: an `Expect` other than 100-continue, which Node would answer a bare 417, is
 * a 417 problem (the body unread, the connection closed). Counted in `unparsed`, logged as clientErrorHandler does.
 */
function expectationFailed(log: Logger, unparsed: Counter<'status_code'>, logRequests: boolean) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const detail = `Expect: ${JSON.stringify(req.headers.expect)} is not supported; send no Expect header, or Expect: 100-continue`;
    const problem = new HttpProblem(417, 'TALLY_ERR_BAD_REQUEST', detail, { field: 'expect' });
    unparsed.inc({ status_code: '417' });
    log[logRequests ? 'info' : 'debug']({ code: problem.code, statusCode: 417 }, problem.message);
    const body = JSON.stringify(problemBody(problem));
    res.writeHead(417, {
      'content-type': `${PROBLEM_TYPE}; charset=utf-8`,
      'content-length': Buffer.byteLength(body),
      connection: 'close',
    });
    res.end(body);
  };
}

/**
 * Fastify's `clientErrorHandler`: answers what the HTTP parser refused (see {@link clientErrorProblem}) as a problem
 * written on the raw socket, which is then closed. Only when no answer has begun on the connection (Node's own rule): a
 * keep-alive connection's answer in flight is never cut into. Counted in `unparsed`; logged as the edge logs an error
 * answer (at info when the app logs requests).
 */
function clientErrorHandler(unparsed: Counter<'status_code'>, logRequests: boolean) {
  return function (this: FastifyInstance, err: ClientError, socket: Socket): void {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const problem = clientErrorProblem(err);
    unparsed.inc({ status_code: String(problem.statusCode) });
    this.log[logRequests ? 'info' : 'debug']({ code: problem.code, statusCode: problem.statusCode, parserCode: err.code }, problem.message);
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !inFlight?.headersSent) {
      const body = JSON.stringify(problemBody(problem));
      socket.write(
        `HTTP/1.1 ${problem.statusCode} ${STATUS_CODES[problem.statusCode]}\r\n` +
          `Content-Type: ${PROBLEM_TYPE}; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy(err);
  };
}
