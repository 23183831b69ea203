# metrics-proxy in a container (docs/deploying.md#container).
#   docker build -t metrics-proxy .
#   docker run -d --name metrics-proxy -p 3063:3063 -v metrics-proxy-data:/var/lib/metrics-proxy \
#     --stop-timeout 60 -e METRICS_PROXY_CLIENT_TOKENS=... metrics-proxy
# Give the container a stop timeout above the in-flight deadline (20 s) plus
# upstream.shutdown_flush_timeout (20 s by default): a Dockerfile cannot set it.

# --- build: the wheel, from the sources only (.dockerignore keeps the rest out) ---------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- run: the wheel and its dependencies in a slim image, as a non-root user ------------------------
FROM python:3.11-slim
# A fixed numeric id, so that Kubernetes' runAsNonRoot can check it and volumes can be prepared.
RUN groupadd --system --gid 10001 metrics-proxy \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/metrics-proxy --no-create-home \
        --shell /usr/sbin/nologin metrics-proxy \
    && mkdir -p /var/lib/metrics-proxy /etc/metrics-proxy \
    && chown metrics-proxy:metrics-proxy /var/lib/metrics-proxy \
    && chmod 0700 /var/lib/metrics-proxy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
# Listen on every address inside the container; the data lives in the volume. A config file can
# be mounted and named with METRICS_PROXY_CONFIG (e.g. /etc/metrics-proxy/proxy.toml).
ENV METRICS_PROXY_HOST=0.0.0.0 \
    METRICS_PROXY_DATA_DIR=/var/lib/metrics-proxy \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/var/lib/metrics-proxy"]
EXPOSE 3063
USER 10001:10001
# Liveness: the process answers /internal-backstage/health (no curl in the image; the command is
# the proxy's own). Readiness for an orchestrator is `metrics-proxy ready`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["metrics-proxy", "health"]
# SIGTERM starts the graceful stop (in-flight requests, the final flush, the store closed); a
# second signal ends it at once, losing nothing acknowledged. Exec form: the proxy is PID 1 and
# receives the signal itself, no shell in between.
STOPSIGNAL SIGTERM
ENTRYPOINT ["metrics-proxy"]
CMD ["serve"]
