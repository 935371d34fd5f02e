# syntax=docker/dockerfile:1
# The tracegate image: `tracegate migrate`, `tracegate api` and `tracegate consume` (see
# docker-compose.yml). Two stages: the first builds wheels for the package and everything it
# depends on; the second installs only those wheels, so the image holds no source tree, no
# virtualenv, no tests, no build tools and no state (.dockerignore keeps them out of the
# context too), and runs as an unprivileged user.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY consumers ./consumers
COPY migrations ./migrations
COPY cli ./cli
COPY loadtest ./loadtest
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# A fixed uid, so volumes and a Kubernetes securityContext can name it.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin \
        tracegate
# Mounted from the build stage, never copied: the wheels are not left in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels tracegate
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRACEGATE_API_HOST=0.0.0.0 \
    TRACEGATE_CONSUMER_HEARTBEAT_FILE=/tmp/tracegate-consumer.heartbeat
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
CMD ["tracegate", "api"]
