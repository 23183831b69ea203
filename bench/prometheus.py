"""Scrape cost with 10,000 app x flag series of feature_toggle_usage_total.

Runs a real proxy (aiohttp on loopback, SQLite in a temporary folder), loads 10,000 (app, flag)
pairs through the bulk API, then times GET /internal-backstage/prometheus beside GET
/internal-backstage/health on the same server, and beside rendering the same family with
prometheus_client objects. Figures are medians; compare the printed ratios, not absolute times
(the machine is shared).

    .venv/bin/python -m bench.prometheus [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from proxy.app import create_app
from proxy.config import Settings

APPS, FLAGS = 100, 100  # 10,000 series pairs


def _bulk_body(app: int) -> bytes:
    metrics = [
        {"featureName": f"flag-{flag:03d}", "appName": f"app-{app:03d}", "environment": "development",
         "yes": app + flag, "no": flag}
        for flag in range(FLAGS)
    ]
    return json.dumps({"applications": [], "metrics": metrics}).encode()


async def _median_ms(session: aiohttp.ClientSession, url: str, repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        async with session.get(url) as resp:
            body = await resp.read()
            assert resp.status == 200, resp.status
        times.append((time.perf_counter() - started) * 1000)
        size = len(body)
    return statistics.median(times), size


def _prometheus_client_ms(rows: list[tuple[str, str, int, int]], repeats: int) -> float:
    """The same family through prometheus_client objects: what the proxy avoids."""

    class UsageCollector:
        def collect(self):
            family = CounterMetricFamily("feature_toggle_usage", "usage", labels=["appName", "toggle", "active"])
            for app, flag, yes, no in rows:
                family.add_metric([app, flag, "true"], yes)
                family.add_metric([app, flag, "false"], no)
            yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        generate_latest(registry)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def _run(quick: bool) -> dict:
    repeats = 5 if quick else 30
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=tmp, auth="open", max_body_size=4 * 1024 * 1024, fold_interval=3600.0)
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                for a in range(APPS):
                    async with session.post(f"{base}/api/client/metrics/bulk", data=_bulk_body(a),
                                            headers={"Content-Type": "application/json"}) as resp:
                        assert resp.status == 202, await resp.text()
                await _median_ms(session, f"{base}/internal-backstage/prometheus", 1)  # fold, warm up
                scrape_ms, scrape_bytes = await _median_ms(session, f"{base}/internal-backstage/prometheus", repeats)
                health_ms, _ = await _median_ms(session, f"{base}/internal-backstage/health", repeats)
                rows = [(f"app-{a:03d}", f"flag-{f:03d}", a + f, f) for a in range(APPS) for f in range(FLAGS)]
                client_ms = _prometheus_client_ms(rows, max(3, repeats // 3))
        finally:
            await runner.cleanup()
    return {
        "series_pairs": APPS * FLAGS,
        "scrape_ms": round(scrape_ms, 1),
        "scrape_bytes": scrape_bytes,
        "health_ms": round(health_ms, 2),
        "scrape_over_health": round(scrape_ms / health_ms, 1),
        "prometheus_client_render_ms": round(client_ms, 1),
        "scrape_over_prometheus_client_render": round(scrape_ms / client_ms, 2),
        "repeats": repeats,
    }


def run(quick: bool) -> dict:
    return asyncio.run(_run(quick))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    report(run(parser.parse_args().quick))


def report(result: dict) -> None:
    print(f"{result['series_pairs']} app x flag pairs ({2 * result['series_pairs']} samples), "
          f"median of {result['repeats']}:")
    print(f"  GET /internal-backstage/prometheus  {result['scrape_ms']:8.1f} ms  ({result['scrape_bytes']} bytes)")
    print(f"  GET /internal-backstage/health      {result['health_ms']:8.2f} ms")
    print(f"  ratio scrape / health               {result['scrape_over_health']:8.1f}x")
    print(f"  same family via prometheus_client   {result['prometheus_client_render_ms']:8.1f} ms (render only)")
    print(f"  ratio scrape / prometheus_client    {result['scrape_over_prometheus_client_render']:8.2f}x")
    print(f"  goal: scrape under 100 ms -> {'met' if result['scrape_ms'] < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
