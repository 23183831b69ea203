"""Fixtures for forwarder tests: a stub upstream on loopback and a proxy app forwarding to it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.unleash.state import FORWARDER, FORWARDER_STATS
from tests.support import CLIENT_TOKEN, client_headers
from tests.upstream_stub import StubUpstream

UPSTREAM_DEV = "default:development.upstream-dev"
UPSTREAM_PROD = "default:production.upstream-prod"


@pytest.fixture
async def stub(aiohttp_server):
    upstream = StubUpstream()
    server = await aiohttp_server(upstream.app())
    upstream.url = str(server.make_url("/api"))
    return upstream


@pytest.fixture
def forwarding_client(make_client, stub):
    """A proxy app whose forwarder sends to the stub; tests call flush() instead of waiting."""

    async def make(settings_overrides: dict | None = None, **upstream_overrides):
        upstream = dict(
            url=stub.url,
            tokens={"development": UPSTREAM_DEV, "production": UPSTREAM_PROD},
            flush_interval=3600.0,
            retry_initial=0.01,
            retry_max=0.05,
            request_timeout=5.0,
        )
        upstream.update(upstream_overrides)
        client = await make_client(upstream=upstream, **(settings_overrides or {}))
        client.forwarder = client.server.app[FORWARDER]
        client.stats = client.server.app[FORWARDER_STATS]
        return client

    return make


def upstream_env(url: str) -> dict[str, str]:
    """Environment for a `ProxyProcess` forwarding to `url` quickly: flushes every 0.2 s and
    retries within 0.05-0.2 s."""
    return {
        "METRICS_PROXY_UPSTREAM_URL": url,
        "METRICS_PROXY_UPSTREAM_TOKENS": f"development={UPSTREAM_DEV}",
        "METRICS_PROXY_UPSTREAM_FLUSH_INTERVAL": "0.2",
        "METRICS_PROXY_UPSTREAM_RETRY_INITIAL": "0.05",
        "METRICS_PROXY_UPSTREAM_RETRY_MAX": "0.2",
    }


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def metrics_body(toggles: dict[str, tuple[int, int]], stop: float, app: str = "app-a",
                 instance: str = "i-1") -> dict:
    return {
        "appName": app,
        "instanceId": instance,
        "bucket": {
            "start": iso(stop - 60),
            "stop": iso(stop),
            "toggles": {name: {"yes": yes, "no": no} for name, (yes, no) in toggles.items()},
        },
    }


async def post_metrics(client, toggles: dict[str, tuple[int, int]], stop: float, token: str = CLIENT_TOKEN,
                       **kwargs) -> None:
    response = await client.post("/api/client/metrics", json=metrics_body(toggles, stop, **kwargs),
                                 headers=client_headers(token))
    assert response.status == 202, await response.text()
