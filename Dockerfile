# One image for every service; each Deployment picks its process with `command`.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY . .
# --no-dev: the local stack (embedded PostgreSQL and NATS, honcho, the mail catcher) and the
# test tools are development dependencies and stay out of the image.
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN groupadd --gid 10001 huntaze && useradd --uid 10001 --gid huntaze --no-create-home huntaze
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
