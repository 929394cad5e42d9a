# syntax=docker/dockerfile:1
#
# lmtp-webhook container image.
#   docker build -t lmtp-webhook .
#   docker run --read-only --tmpfs /tmp -e ADMIN_TOKENS=... -e REDIS_URL=redis://... lmtp-webhook
#
# The runtime stage holds production dependencies and the compiled dist/ only, runs as the fixed
# non-root uid/gid 10001 and writes nothing outside /tmp, so it runs with a read-only root filesystem.

ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: dev dependencies + TypeScript compile -------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime ---------------------------------------------------------------------------------
FROM node:24-bookworm-slim AS runtime

ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="lmtp-webhook" \
      org.opencontainers.image.description="Receives mail over LMTP and delivers each recipient's message to its HTTP webhook; the webhook's answer becomes that recipient's LMTP reply." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/node:24-bookworm-slim"

# tini is PID 1: it forwards SIGTERM to node and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lmtp \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin lmtp

WORKDIR /app
ENV NODE_ENV=production \
    TMPDIR=/tmp \
    LMTP_PORT=2424 \
    ADMIN_PORT=8080

# Production dependencies only; the npm cache is dropped so nothing under /root stays behind.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force \
 && rm -rf /root/.npm /tmp/*

# Files stay owned by root: the service user can read but never change its own code.
COPY --from=build /app/dist ./dist
# The webhook payload's JSON Schema, served by the admin API beside the OpenAPI document.
COPY openapi ./openapi
# The operator dashboard (GET /ui): static files, served as they are.
COPY ui ./ui

USER 10001:10001
# The only writable place the service needs (mount an emptyDir/tmpfs here with a read-only root).
VOLUME /tmp
EXPOSE 2424 8080
STOPSIGNAL SIGTERM

# Kubernetes uses its own probes; this one serves plain `docker run` and compose.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.ADMIN_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/main.js"]
