import type { IncomingMessage, ServerResponse } from 'node:http';
import { fastify, LogController, type FastifyInstance, type RawServerDefault } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { sendProblem, tallyEdge, type EdgeOptions } from './edge.plugin';
import { HttpProblem } from './problem';

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
  const app = fastify({
    loggerInstance: opts.log,
    logController: new LogController({ disableRequestLogging: true }),
    ...(opts.bodyLimit !== undefined ? { bodyLimit: opts.bodyLimit } : {}),
    // A client that trickles a body this long is cut off.
    requestTimeout: 30_000,
    // Ids are up to 128 characters (a path value base64url-encoded, up to 171): Fastify's default of 100 refused a
    // long one with a 400 before its route could check it.
    routerOptions: { maxParamLength: 512 },
    return503OnClosing: true,
    // Errors of the router itself (a URL whose percent-encoding is broken), before any hook: a problem like the rest.
    frameworkErrors: (err, _req, reply) => sendProblem(reply, new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', err.message, { field: 'url' })),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(tallyEdge, opts);
  return app;
}
