"""What a polling SDK costs the proxy: GET /api/client/features over loopback HTTP.

Baseline (same run): the answer rendered from scratch on every request (filter, encode, hash), as
a proxy without per-filter views would. Compared: the rendered-view path (200) and the 304 path.
Prints requests per second and ratios to the baseline; no thresholds, nothing asserted.

    .venv/bin/python bench/features_serving.py [--flags 2000] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from proxy.app import create_app
from proxy.config import Settings
from proxy.unleash.features.document import FeatureDocument

TOKEN = "default:development.bench-secret"


def make_document(flags: int) -> dict:
    strategy = {"name": "flexibleRollout", "constraints": [], "variants": [],
                "parameters": {"groupId": "g", "rollout": "50", "stickiness": "default"}}
    return {"version": 2, "segments": [], "features": [
        {"name": f"team{i % 20}.flag-{i}", "type": "release", "enabled": True, "project": "default",
         "stale": False, "strategies": [dict(strategy, parameters={**strategy["parameters"], "groupId": f"flag-{i}"})],
         "variants": [], "description": "x" * 40, "impressionData": False}
        for i in range(flags)
    ]}


async def run(session: aiohttp.ClientSession, url: str, requests: int, headers: dict[str, str], status: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            assert resp.status == status, resp.status
    return requests / (time.perf_counter() - started)


async def main(flags: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.json"
        path.write_text(json.dumps(make_document(flags)))
        settings = Settings(data_dir=tmp, client_tokens=[TOKEN], features_file=str(path),
                            features_refresh_interval=3600.0, log_level="WARNING")
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/api/client/features"
        headers = {"Authorization": TOKEN}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(url, headers=headers) as resp:
                    etag, size = resp.headers["ETag"], len(await resp.read())
                # Baseline: bypass the rendered views, so every request filters, encodes and hashes.
                cached_render = FeatureDocument.render
                FeatureDocument.render = FeatureDocument._render
                try:
                    baseline = await run(session, url, max(requests // 10, 10), headers, 200)
                finally:
                    FeatureDocument.render = cached_render
                cached = await run(session, url, requests, headers, 200)
                not_modified = await run(session, url, requests, {**headers, "If-None-Match": etag}, 304)
        finally:
            await runner.cleanup()
    print(f"{flags} flags, {size} bytes per full answer")
    print(f"baseline (render every request): {baseline:8.0f} req/s   1.00x")
    print(f"rendered view, 200:              {cached:8.0f} req/s   {cached / baseline:.2f}x")
    print(f"If-None-Match, 304:              {not_modified:8.0f} req/s   {not_modified / baseline:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.flags, args.requests))
