# syntax=docker/dockerfile:1.7
#
# Tally images: one target per app, plus `tools` (create-table, dlq, tenants).
#
#   docker build --target collector         -t tally/collector .
#   docker build --target query-api         -t tally/query-api .
#   docker build --target bucket-aggregator -t tally/bucket-aggregator .
#   docker build --target dynamo-writer     -t tally/dynamo-writer .
#   docker build --target tools             -t tally/tools .
#
# Each app is bundled by esbuild (`npm run build:apps`, tools/build-apps) into one ESM file; a runtime image holds
# that file, its source map, and node_modules only for a package that cannot be bundled (the query API's Swagger UI
# assets). The apps run as the unprivileged `node` user on code owned by root, under tini (see "runtime").
# tools/ops-check checks this file against the apps' config schemas, docker-compose.yml and deploy/prometheus.yml.

ARG NODE_IMAGE=node:24-bookworm-slim

# ---- manifests: only the package files, so `npm ci` below stays cached while sources change ----
FROM ${NODE_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN mkdir /manifests \
 && find . -name node_modules -prune -o \( -name package.json -o -name package-lock.json \) -type f -print \
    | xargs cp --parents -t /manifests

# ---- build: install, bundle the apps and tools, build the dashboard ----
FROM ${NODE_IMAGE} AS build
WORKDIR /repo
ENV NX_DAEMON=false NX_NO_CLOUD=true
COPY --from=manifests /manifests/ ./
# No install scripts: esbuild, vite and rollup take their platform binaries from optional dependencies.
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build:apps \
 && npm run build --workspace @tally/dashboard \
 && test -f apps/dashboard/dist/index.html

# ---- runtime: what every image shares ----
# tini is PID 1: it forwards SIGTERM to node and reaps zombies. Node as PID 1 would get no default signal
# handling: a SIGTERM that arrives before an app has installed its shutdown handler (e.g. while it waits for
# Redis at start) would be ignored until Docker's SIGKILL after the grace period. With tini, node gets the
# default action (exit) in that window and the graceful shutdown (libs/observability installShutdown) after it,
# the same under Docker, compose and Kubernetes, without depending on `--init`.
FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
USER node
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
# Every app stage runs its bundle; the tools stage names its own command.
CMD ["node", "--enable-source-maps", "main.mjs"]

# HEALTHCHECK: /healthz on the app's HTTP_PORT (its default unless the container sets another), with node's fetch,
# so the image needs no curl. It needs HTTP_HOST to include 127.0.0.1 (the default 0.0.0.0 does).

FROM runtime AS collector
COPY --from=build /repo/dist/collector/ ./
EXPOSE 7401
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.HTTP_PORT||7401)+'/healthz',{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

FROM runtime AS query-api
COPY --from=build /repo/dist/query-api/ ./
COPY --from=build /repo/apps/dashboard/dist/ ./dashboard/
ENV DASHBOARD_DIR=/app/dashboard
EXPOSE 7402
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.HTTP_PORT||7402)+'/healthz',{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

FROM runtime AS bucket-aggregator
COPY --from=build /repo/dist/bucket-aggregator/ ./
EXPOSE 7403
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.HTTP_PORT||7403)+'/healthz',{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

FROM runtime AS dynamo-writer
COPY --from=build /repo/dist/dynamo-writer/ ./
EXPOSE 7404
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.HTTP_PORT||7404)+'/healthz',{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# Operator tools: `create-table`, `create-table-when-ready [seconds]`, `dlq <command>`, `tenants <command>`.
FROM runtime AS tools
COPY --from=build /repo/dist/create-table/ ./create-table/
COPY --from=build /repo/dist/dlq/ ./dlq/
COPY --from=build /repo/dist/tenants/ ./tenants/
COPY --chmod=755 deploy/bin/ /usr/local/bin/
HEALTHCHECK NONE
CMD ["dlq", "--help"]
