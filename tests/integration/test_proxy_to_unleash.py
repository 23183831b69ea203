"""Issue 3, end to end: SDK posts -> a real proxy process -> the real Unleash (8.2.0, tests/integration/unleash_server.py).

Unleash's bulk upsert is additive and has no idempotency key, so any re-send by the proxy shows up
as a larger total. The test reads the totals back, then keeps reading well past Unleash's 5 s write
cycle (and across a proxy restart) to prove every acknowledged count arrived exactly once.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

pytest.importorskip(
    "proxy.unleash.upstream.forwarder",
    reason="the forwarder (proxy/unleash/upstream/forwarder.py) is built on another branch; runs once merged",
)

from tests.integration.conftest import KNOWN_FLAGS  # noqa: E402
from tests.integration.unleash_server import CLIENT_TOKEN as UNLEASH_CLIENT_TOKEN  # noqa: E402
from tests.integration.unleash_server import Usage
from tests.integration.usage_model import (  # noqa: E402
    expected_usage,
    iso_now,
    observed_usage,
    restamped,
    wait_for_usage,
)
from tests.support import CLIENT_TOKEN, PAYLOADS, ProxyProcess, recorded_requests  # noqa: E402

pytestmark = pytest.mark.integration

ARRIVES_WITHIN = 60.0  # seconds: proxy flush (1 s) + Unleash's 5 s write cycle, on a loaded machine
# How long totals must stay put: two Unleash write cycles after a second proxy flush could have
# re-sent anything. Unleash runs on its own wall clock, so this cannot be an injected clock.
STABLE_FOR = 12.0
NOT_FORWARDED_HEADERS = {"host", "content-length", "authorization", "connection", "accept-encoding"}


def upstream_env(server, flush_interval: float = 1) -> dict[str, str]:
    return {
        "METRICS_PROXY_UPSTREAM_URL": server.api_url,
        "METRICS_PROXY_UPSTREAM_TOKENS": f"development={UNLEASH_CLIENT_TOKEN}",
        "METRICS_PROXY_UPSTREAM_FLUSH_INTERVAL": str(flush_interval),
    }


def own_metrics_body(app: str = "proxy-app") -> dict:
    now = iso_now()
    return {
        "appName": app,
        "instanceId": f"{app}-1",
        "bucket": {
            "start": now,
            "stop": now,
            "toggles": {
                "it.checkout": {"yes": 11, "no": 4, "variants": {}},
                "it.colour": {"yes": 6, "no": 1, "variants": {"green": 4, "blue": 2}},
                "it.never-created": {"yes": 3, "no": 3, "variants": {}},
            },
        },
    }


def post(proxy: ProxyProcess, path: str, body: dict, recorded_headers: dict | None = None) -> int:
    headers = {k: v for k, v in (recorded_headers or {}).items() if k.lower() not in NOT_FORWARDED_HEADERS}
    headers.update({"Authorization": CLIENT_TOKEN, "Content-Type": "application/json"})
    request = urllib.request.Request(proxy.url + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def first_wave() -> list[tuple[str, dict, dict | None]]:
    """(path, body, recorded headers): every recorded SDK request, the curl bodies, own counts."""
    posts = [(r["path"], r["body"] if "bucket" not in r["body"] else restamped(r["body"]), r["headers"])
             for r in recorded_requests("register") + recorded_requests("metrics")]
    curl = PAYLOADS / "curl"
    posts.append(("/api/client/register", json.loads((curl / "register.json").read_text()), None))
    posts.append(("/api/client/metrics", restamped(json.loads((curl / "metrics.json").read_text())), None))
    posts.append(("/api/client/metrics/bulk",
                  restamped(json.loads((curl / "bulk.json").read_text()), app_prefix="proxy:"), None))
    posts.append(("/api/client/metrics", own_metrics_body(), None))
    return posts


def assert_stays(expected, read, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert observed_usage(read, expected) == expected, "Unleash's totals moved: a batch was sent twice"
        time.sleep(0.5)


def test_proxy_forwards_every_acknowledged_count_to_unleash_exactly_once(unleash, tmp_path):
    server = unleash.server
    proxy = ProxyProcess(tmp_path / "data", extra_env=upstream_env(server)).start()
    try:
        wave = first_wave()
        for path, body, headers in wave:
            assert post(proxy, path, body, headers) == 202, path
        expected = expected_usage([body for _, body, _ in wave], KNOWN_FLAGS, "development")
        assert expected[("it.checkout", "proxy-app")] == Usage(yes=11, no=4)
        assert len({app for _, app in expected}) == 5  # py-sdk, node-sdk, curl, proxy:bulk, proxy-app

        wait_for_usage(expected, server.usage, ARRIVES_WITHIN)
        assert_stays(expected, server.usage, STABLE_FOR)

        # A restart must not send the delivered outbox again, and must keep forwarding new counts.
        assert proxy.terminate() == 0
        proxy.start()
        second = own_metrics_body()
        assert post(proxy, "/api/client/metrics", second) == 202
        expected = expected_usage([body for _, body, _ in wave] + [second], KNOWN_FLAGS, "development")
        assert expected[("it.checkout", "proxy-app")] == Usage(yes=22, no=8)

        wait_for_usage(expected, server.usage, ARRIVES_WITHIN)
        assert_stays(expected, server.usage, STABLE_FOR)
    finally:
        proxy.stop()
        print(proxy.log()[-3000:])


def test_counts_acknowledged_before_a_kill_9_reach_unleash_once_after_restart(unleash, tmp_path):
    server = unleash.server
    # A flush interval far beyond the test: nothing can be in flight when the process is killed,
    # so every count below lives only in the proxy's SQLite file at that moment.
    proxy = ProxyProcess(tmp_path / "data", extra_env=upstream_env(server, flush_interval=3600)).start()
    try:
        bodies = [own_metrics_body("crash-app") for _ in range(3)]
        for body in bodies:
            assert post(proxy, "/api/client/metrics", body) == 202
        proxy.kill()
        assert server.usage("it.checkout").get("crash-app") is None  # not sent before the kill

        proxy = ProxyProcess(tmp_path / "data", extra_env=upstream_env(server)).start()
        expected = expected_usage(bodies, KNOWN_FLAGS, "development")
        assert expected[("it.checkout", "crash-app")] == Usage(yes=33, no=12)
        wait_for_usage(expected, server.usage, ARRIVES_WITHIN)
        assert_stays(expected, server.usage, STABLE_FOR / 2)
    finally:
        proxy.stop()
        print(proxy.log()[-3000:])
