import type { IncomingMessage, ServerResponse } from 'node:http';
import { fastify, LogController, type FastifyInstance, type RawServerDefault } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { tallyEdge, type EdgeOptions } from './edge.plugin';

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
    return503OnClosing: true,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(tallyEdge, opts);
  return app;
}
