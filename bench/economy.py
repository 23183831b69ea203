"""Upstream economy: what reaches Unleash through the proxy vs what the SDKs would have sent to it.

Simulated SDK instances (this process, aiohttp on loopback) register once and post usage metrics
every 10 s to a real `python -m proxy serve`, which forwards to a recording upstream
(bench/recorder.py, its own process) every 10 s. The baseline is the SDK traffic itself: the sum
of the SDKs' requests and body bytes, i.e. what the same SDKs would have sent to Unleash directly.
At the end one admin flush sends what the last interval left, then totals must match exactly.

Upstream bytes are counted as they cross the wire (gzip-compressed, the default) and as the JSON
they carry (what upstream.compress = false sends), so the report shows both.

Full: 1,000 instances for 120 s. Quick: 200 instances for 20 s (the same pacing, scaled down: fewer
flush intervals, so fewer requests are saved). Goals (issue 7): >= 100x fewer requests, >= 10x
fewer bytes, every count delivered exactly once.

    python -m bench.economy [--quick]
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench.harness import cli
from bench.recorder import CLIENT_TOKEN, forwarding_proxy, recording_upstream

ADMIN_TOKEN = "*:*.bench-admin"
APPS = 20
FLAGS_PER_APP = 15
POST_INTERVAL = 10.0
STRATEGIES = ["default", "applicationHostname", "gradualRolloutRandom", "gradualRolloutUserId",
              "gradualRolloutSessionId", "userWithId", "remoteAddress", "flexibleRollout"]


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Instance:
    """One SDK instance, shaped like unleash-client-node 6.12.1's recorded requests."""

    def __init__(self, n: int, rng: random.Random) -> None:
        self.app = f"bench-app-{n % APPS:02d}"
        self.instance_id = f"{self.app}-host-{n:04d}"
        self.rng = rng
        self.started = time.time()
        self.headers = {"Content-Type": "application/json", "Authorization": CLIENT_TOKEN,
                        "unleash-appname": self.app, "UNLEASH-INSTANCEID": self.instance_id,
                        "unleash-sdk": "unleash-node-sdk:6.12.1", "unleash-interval": "10000"}

    def register_body(self) -> bytes:
        return json.dumps({
            "appName": self.app, "instanceId": self.instance_id, "sdkVersion": "unleash-node-sdk:6.12.1",
            "strategies": STRATEGIES, "started": iso(self.started), "interval": 10000,
            "connectionId": f"conn-{self.instance_id}", "platformName": "node", "platformVersion": "20.20.2",
            "yggdrasilVersion": None, "specVersion": "5.2.0",
        }).encode()

    def metrics_body(self, start: float, stop: float) -> tuple[bytes, int]:
        toggles = {}
        for f in range(FLAGS_PER_APP):
            yes, no = self.rng.randrange(50), self.rng.randrange(50)
            variants = {"red": yes // 2, "blue": yes - yes // 2} if f == 0 else {}
            toggles[f"{self.app}.flag-{f:02d}"] = {"yes": yes, "no": no, "variants": variants}
        body = {"appName": self.app, "instanceId": self.instance_id, "connectionId": f"conn-{self.instance_id}",
                "bucket": {"start": iso(start), "stop": iso(stop), "toggles": toggles},
                "platformName": "node", "platformVersion": "20.20.2", "yggdrasilVersion": None,
                "specVersion": "5.2.0"}
        return json.dumps(body).encode(), sum(t["yes"] + t["no"] for t in toggles.values())


async def simulate(base: str, instances: int, seconds: float) -> dict:
    """Every instance registers, then posts every POST_INTERVAL until `seconds` have passed; start
    times are spread over the first interval as real fleets are."""
    sent = {"requests": 0, "bytes": 0, "counts": 0, "non_202": 0}
    rng = random.Random(11)
    began = time.monotonic()

    async def post(session: aiohttp.ClientSession, path: str, body: bytes, headers: dict) -> None:
        async with session.post(base + path, data=body, headers=headers) as response:
            await response.read()
            if response.status != 202:
                sent["non_202"] += 1
                return
        sent["requests"] += 1
        sent["bytes"] += len(body)

    async def one(session: aiohttp.ClientSession, sdk: Instance, offset: float) -> None:
        await asyncio.sleep(offset)
        await post(session, "/api/client/register", sdk.register_body(), sdk.headers)
        last = time.time()
        tick = began + offset
        while True:
            tick += POST_INTERVAL
            if tick - began > seconds:
                return
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            now = time.time()
            body, counts = sdk.metrics_body(last, now)
            last = now
            await post(session, "/api/client/metrics", body, sdk.headers)
            sent["counts"] += counts

    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, Instance(n, rng), rng.uniform(0, POST_INTERVAL))
                               for n in range(instances)))
        async with session.post(base + "/internal-backstage/flush", headers={"Authorization": ADMIN_TOKEN}) as r:
            flushed = await r.json()
    sent["final_flush"] = flushed
    return sent


def run(quick: bool = False, instance_refresh: str | None = None) -> dict:
    instances, seconds = (200, 20.0) if quick else (1000, 120.0)
    options = {"UPSTREAM_INSTANCE_REFRESH_INTERVAL": instance_refresh} if instance_refresh else {}
    with tempfile.TemporaryDirectory(prefix="bench-economy-") as tmp, recording_upstream() as upstream:
        data = Path(tmp) / "data"
        with forwarding_proxy(upstream.url, data, ADMIN_TOKENS=ADMIN_TOKEN, UPSTREAM_FLUSH_INTERVAL="10",
                              **options) as proxy:
            started = time.monotonic()
            sdk = asyncio.run(simulate(proxy.url, instances, seconds))
            elapsed = time.monotonic() - started
        received = upstream.stats()
    delivered = received["yes"] + received["no"]
    return {
        "instance_refresh_interval": instance_refresh or "default", "instances": instances, "seconds": seconds,
        "post_interval": POST_INTERVAL, "apps": APPS,
        "flags_per_app": FLAGS_PER_APP, "elapsed_seconds": round(elapsed, 1),
        "sdk_requests": sdk["requests"], "sdk_bytes": sdk["bytes"], "sdk_counts": sdk["counts"],
        "sdk_non_202": sdk["non_202"],
        "upstream_requests": received["requests"], "upstream_json_bytes": received["bytes"],
        "upstream_bytes": received["wire_bytes"],
        "upstream_counts": delivered, "upstream_metric_rows": received["metric_rows"],
        "upstream_application_rows": received["application_rows"],
        "request_ratio": round(sdk["requests"] / max(1, received["requests"]), 1),
        "byte_ratio": round(sdk["bytes"] / max(1, received["wire_bytes"]), 1),
        "json_byte_ratio": round(sdk["bytes"] / max(1, received["bytes"]), 1),
        "counts_exact": delivered == sdk["counts"] and sdk["non_202"] == 0,
    }


def report(r: dict) -> None:
    print(f"economy: {r['instances']} SDK instances, {r['apps']} apps x {r['flags_per_app']} flags, posting every "
          f"{r['post_interval']:.0f} s for {r['seconds']:.0f} s; proxy flushes every 10 s")
    print(f"{'':<22}{'requests':>10}{'body bytes':>14}")
    print(f"{'SDKs (direct)':<22}{r['sdk_requests']:>10,}{r['sdk_bytes']:>14,}")
    print(f"{'proxy -> upstream':<22}{r['upstream_requests']:>10,}{r['upstream_bytes']:>14,}"
          f"   on the wire ({r['upstream_metric_rows']:,} metric rows, {r['upstream_application_rows']:,} application rows)")
    print(f"{'  as JSON':<22}{'':>10}{r['upstream_json_bytes']:>14,}   before gzip (upstream.compress = false sends this)")
    print(f"{'ratio':<22}{r['request_ratio']:>9}x{r['byte_ratio']:>13}x   ({r['json_byte_ratio']}x without gzip); "
          f"goals >= 100x, >= 10x: "
          f"{'met' if r['request_ratio'] >= 100 else 'NOT met'}, {'met' if r['byte_ratio'] >= 10 else 'NOT met'}")
    print(f"counts: SDKs had {r['sdk_counts']:,} acknowledged, upstream received {r['upstream_counts']:,} -> "
          f"{'exact' if r['counts_exact'] else 'MISMATCH'}")
    assert r["counts_exact"], "every acknowledged count must reach the upstream exactly once"


def main() -> None:
    def refresh_option(parser) -> None:
        parser.add_argument("--instance-refresh", metavar="SECONDS",
                            help="the proxy's upstream.instance_refresh_interval (default: its default, 60)")

    cli("economy", __doc__, run, report, "200 instances for 20 s instead of 1,000 for 120 s", refresh_option)


if __name__ == "__main__":
    main()
