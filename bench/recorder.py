"""A recording stand-in for Unleash, run as its own process, and a proxy process forwarding to it.

The recorder answers POST /api/client/metrics/bulk with a settable status (202 by default) and
tallies what it received: requests and bytes (all, and those answered 2xx), and the yes/no totals
of the 2xx ones, so a benchmark can check that every count arrived exactly once. Feature polls get
an empty document and are tallied apart (they are not metrics traffic).

    python -m bench.recorder PORT        # GET /control/stats, POST /control/answer?status=503
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from bench.harness import free_port, stop, wait_healthy

CLIENT_TOKEN = "default:development.bench-client"
UPSTREAM_TOKEN = "default:development.bench-upstream"


class Tally:
    def __init__(self) -> None:
        self.answer = 202
        # bytes: the JSON bodies (aiohttp undoes Content-Encoding); wire_bytes: as sent (gzip by default)
        self.stats = {"requests": 0, "bytes": 0, "wire_bytes": 0, "delivered_requests": 0, "delivered_bytes": 0, "yes": 0, "no": 0,
                      "metric_rows": 0, "application_rows": 0, "feature_polls": 0, "first_at": None, "last_at": None,
                      "idempotency_keys": 0}
        self.keys: set[str] = set()

    async def bulk(self, request: web.Request) -> web.Response:
        raw = await request.read()
        s = self.stats
        s["requests"] += 1
        s["bytes"] += len(raw)
        s["wire_bytes"] += request.content_length or len(raw)
        if self.answer >= 300:
            return web.Response(status=self.answer)
        body = json.loads(raw)
        key = request.headers.get("Idempotency-Key", "")
        if key in self.keys:  # a resend of a delivered batch must not count twice, as in a chained proxy
            return web.Response(status=202)
        self.keys.add(key)
        now = time.time()
        s["first_at"] = s["first_at"] or now
        s["last_at"] = now
        s["delivered_requests"] += 1
        s["delivered_bytes"] += len(raw)
        s["idempotency_keys"] = len(self.keys)
        for metric in body["metrics"]:
            s["yes"] += metric["yes"]
            s["no"] += metric["no"]
        s["metric_rows"] += len(body["metrics"])
        s["application_rows"] += len(body["applications"])
        return web.Response(status=202)

    async def features(self, request: web.Request) -> web.Response:
        self.stats["feature_polls"] += 1
        return web.json_response({"version": 2, "features": [], "segments": []})

    async def set_answer(self, request: web.Request) -> web.Response:
        self.answer = int(request.query["status"])
        return web.json_response({"answer": self.answer})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "OK"})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/api/client/metrics/bulk", self.bulk)
        app.router.add_get("/api/client/features", self.features)
        app.router.add_post("/control/answer", self.set_answer)
        app.router.add_get("/control/stats", self.get_stats)
        app.router.add_get("/internal-backstage/health", self.health)
        return app


class Recorder:
    """The bench process's handle on a recorder subprocess."""

    def __init__(self, url: str) -> None:
        self.url = url

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/control/stats", timeout=10) as r:
            return json.loads(r.read())

    def answer(self, status: int) -> None:
        request = urllib.request.Request(f"{self.url}/control/answer?status={status}", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


@contextmanager
def recording_upstream():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.recorder", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield Recorder(url)
    finally:
        stop(proc, 30)


class ProxyProcess:
    """A real `python -m proxy serve` forwarding to `upstream_url`; pid for /proc readings."""

    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc = proc
        self.url = url
        self.pid = proc.pid

    def scrape(self) -> dict[str, float]:
        """Unlabelled and environment-labelled proxy gauges, name{labels} -> value."""
        with urllib.request.urlopen(self.url + "/internal-backstage/prometheus", timeout=30) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("metrics_proxy_") and " " in line:
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


@contextmanager
def forwarding_proxy(upstream_url: str, data_dir: Path, **options: str):
    """Start the proxy on data_dir with [upstream] at the recorder; options are extra
    METRICS_PROXY_<NAME> settings (e.g. UPSTREAM_FLUSH_INTERVAL="2")."""
    port = free_port()
    env = dict(os.environ, METRICS_PROXY_CLIENT_TOKENS=CLIENT_TOKEN, METRICS_PROXY_LOG_LEVEL="WARNING",
               METRICS_PROXY_UPSTREAM_URL=upstream_url + "/api",
               METRICS_PROXY_UPSTREAM_TOKENS=f"development={UPSTREAM_TOKEN}",
               **{f"METRICS_PROXY_{k}": v for k, v in options.items()})
    log = open(data_dir.parent / f"proxy-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port),
                             "--data-dir", str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=120)
        yield ProxyProcess(proc, url)
    finally:
        stop(proc, 60)
        log.close()


def main() -> None:
    web.run_app(Tally().app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
