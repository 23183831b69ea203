"""A real Unleash (the integration tests' version, 8.2.0) as a benchmark peer, and a quick measurement of its metrics ingest.

    .venv/bin/python bench/peer_unleash.py serve            # start it, print URL and tokens, wait
    .venv/bin/python bench/peer_unleash.py load --seconds 10 --connections 64

`load` posts a 20-toggle `/api/client/metrics` body (built from a recorded Python SDK post) for a
bounded time and prints Unleash's req/s as a ratio of a bare aiohttp server answering 202 to the
same client in the same run (the baseline: what this load client and machine can drive at all).

The server is the integration tests' harness (tests/integration/unleash_server.py) with Unleash's
per-IP rate limit raised; its env names are crossed (7.5.1 and 8.2.0 alike): REGISTER_CLIENT_RATE_LIMIT_PER_MINUTE
limits /api/client/metrics and CLIENT_METRICS_RATE_LIMIT_PER_MINUTE limits /api/client/register.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from tests.integration.unleash_server import (  # noqa: E402
    CLIENT_TOKEN,
    UNLEASH_VERSION,
    UnleashStack,
    unleash_stack,
)
from tests.support import PAYLOADS, free_port  # noqa: E402

UNLIMITED = str(10**9)
PEER_ENV = {
    "REGISTER_CLIENT_RATE_LIMIT_PER_MINUTE": UNLIMITED,  # limits /api/client/metrics (sic)
    "CLIENT_METRICS_RATE_LIMIT_PER_MINUTE": UNLIMITED,  # limits /api/client/register (sic)
    "UNLEASH_LOG_LEVEL": "error",
}
TOGGLES = 20
APPS = 64
BENCH_FLAGS = [f"bench.flag-{i:02d}" for i in range(TOGGLES)]


@contextmanager
def peer_unleash(flags: list[str] = BENCH_FLAGS) -> Iterator[UnleashStack]:
    """Unleash + PostgreSQL with the rate limits out of the way and `flags` created."""
    with unleash_stack(flags=flags, extra_env=PEER_ENV) as stack:
        yield stack


def metrics_bodies(apps: int = APPS) -> list[bytes]:
    """The recorded Python SDK post widened to 20 toggles (its 4 toggles' counts cycled), one body
    per app name so the server merges into distinct keys as 64 SDK instances would make it."""
    recorded = json.loads((PAYLOADS / "python-sdk-UnleashClient-6.9.1" / "metrics-01.json").read_text())["body"]
    counts = list(recorded["bucket"]["toggles"].values())
    bodies = []
    for app in range(apps):
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        body = dict(recorded, appName=f"bench-app-{app:02d}", instanceId=f"bench-{app:02d}")
        body["bucket"] = {"start": now, "stop": now,
                          "toggles": {flag: counts[i % len(counts)] for i, flag in enumerate(BENCH_FLAGS)}}
        bodies.append(json.dumps(body).encode())
    return bodies


async def load(url: str, bodies: list[bytes], seconds: float, connections: int) -> dict:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    headers = {"Authorization": CLIENT_TOKEN, "Content-Type": "application/json"}
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            began = time.monotonic()
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as response:
                await response.read()
                statuses[response.status] += 1
            latencies.append(time.monotonic() - began)
            i += 1

    began = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        await asyncio.gather(*(worker(session, n) for n in range(connections)))
    elapsed = time.monotonic() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "statuses": dict(statuses),
    }


def _serve_bare_202(port: int) -> None:
    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/api/client/metrics", accept)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _wait_for_port(port: int, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def measure(seconds: float, connections: int) -> None:
    bodies = metrics_bodies()
    port = free_port()
    baseline_server = multiprocessing.Process(target=_serve_bare_202, args=(port,), daemon=True)
    baseline_server.start()
    try:
        _wait_for_port(port)
        baseline = asyncio.run(load(f"http://127.0.0.1:{port}/api/client/metrics", bodies, seconds, connections))
    finally:
        baseline_server.terminate()
        baseline_server.join(10)
    with peer_unleash() as stack:
        print(f"unleash started in {stack.started_in:.1f} s at {stack.server.url}")
        unleash = asyncio.run(load(stack.server.api_url + "/client/metrics", bodies, seconds, connections))
    for name, result in (("bare aiohttp 202 (baseline)", baseline), (f"unleash {UNLEASH_VERSION}", unleash)):
        print(f"{name:28s} {result['req_per_s']:9.0f} req/s  p50 {result['p50_ms']:.1f} ms  "
              f"p99 {result['p99_ms']:.1f} ms  statuses {result['statuses']}")
    print(f"unleash / baseline = {unleash['req_per_s'] / baseline['req_per_s']:.3f} "
          f"({TOGGLES} toggles, {connections} connections, {seconds:.0f} s each)")


def serve() -> None:
    with peer_unleash() as stack:
        print(json.dumps({"url": stack.server.url, "api_url": stack.server.api_url,
                          "client_token": CLIENT_TOKEN, "flags": BENCH_FLAGS}), flush=True)
        try:
            while stack.server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start the peer and wait until Ctrl-C")
    measure_cmd = sub.add_parser("load", help="measure /api/client/metrics req/s against a baseline")
    measure_cmd.add_argument("--seconds", type=float, default=10.0)
    measure_cmd.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if args.command == "serve":
        serve()
    else:
        measure(args.seconds, args.connections)


if __name__ == "__main__":
    main()
