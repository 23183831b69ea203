FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/metrics-proxy metrics-proxy \
    && mkdir -p /var/lib/metrics-proxy && chown metrics-proxy /var/lib/metrics-proxy
USER metrics-proxy
ENV METRICS_PROXY_HOST=0.0.0.0 METRICS_PROXY_DATA_DIR=/var/lib/metrics-proxy
VOLUME /var/lib/metrics-proxy
EXPOSE 3063
# `ready` exits 1 while the database cannot commit (disk full, failed migration).
HEALTHCHECK --interval=10s --timeout=5s CMD ["metrics-proxy", "ready"]
# SIGTERM lets the proxy commit and stop cleanly; allow it the grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["metrics-proxy"]
CMD ["serve"]
