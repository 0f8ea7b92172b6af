import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';

/**
 * The OpenAPI document, generated from the routes' zod schemas: `GET /docs` (Swagger UI) and `GET /docs/json`.
 * Register before the routes, so every route is collected.
 */
export async function registerDocs(app: FastifyInstance<any, any, any, any, any>): Promise<void> {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Tally query API',
        description:
          "Near-real-time counters of the API key's store: DynamoDB rows binned by day, month, year and all time, plus exactly the counts still in Redis. Days are in the store's time zone. Authenticate with `Authorization: Bearer <read-scope key>`. The admin routes take an admin-scope key, the operator routes the operator credential.",
        version: '1.0.0',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'An API key with the read scope (the admin routes: the admin scope)' },
          operator: {
            type: 'http',
            scheme: 'bearer',
            description: 'The operator credential of the configuration (ADMIN_OPERATOR_TOKEN); not a store key',
          },
        },
      },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs' });
}
