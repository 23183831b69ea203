from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from proxy.app import create_app
from proxy.clock import ManualClock
from proxy.config import LaunchDarklySettings, Settings, UpstreamSettings
from tests.support import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    FRONTEND_TOKEN,
    PROD_TOKEN,
    TEST_DISK_RESERVE,
    ProxyProcess,
)

# Fixtures of the upstream forwarder tests (stub upstream, forwarding_client).
pytest_plugins = ["tests.forwarding"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "clock_at(seconds): the clock fixture (and every proxy app built on it) starts at this instant "
        "instead of half past the current hour; for tests that replay the recorded SDK traffic at the "
        "time it was recorded (tests/reads_support.py: RECORDED_AT)",
    )


@pytest.fixture
def clock(request) -> ManualClock:
    marker = request.node.get_closest_marker("clock_at")
    if marker is not None:
        return ManualClock(start=marker.args[0])
    # A fixed, recent instant in the middle of an hour, so windows are deterministic. Tests derive
    # their bucket times from it (or from now): no test may depend on today's date.
    return ManualClock(start=(time.time() // 3600) * 3600 + 1800)


@pytest.fixture
def make_settings(tmp_path) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        values = dict(
            data_dir=str(tmp_path / "data"),
            client_tokens=[CLIENT_TOKEN, PROD_TOKEN],
            frontend_tokens=[FRONTEND_TOKEN],
            admin_tokens=[ADMIN_TOKEN],
            fold_interval=3600.0,  # tests fold explicitly (reads fold first)
            disk_reserve=TEST_DISK_RESERVE,
        )
        values.update(overrides)
        if isinstance(values.get("upstream"), dict):
            values["upstream"] = UpstreamSettings(**values["upstream"])
        if isinstance(values.get("launchdarkly"), dict):
            values["launchdarkly"] = LaunchDarklySettings(**values["launchdarkly"])
        return Settings(**values)

    return make


@pytest.fixture
async def make_client(aiohttp_client, make_settings, clock):
    """A test client for a proxy app built from settings overrides (real SQLite in tmp_path)."""

    async def make(**overrides):
        app = create_app(make_settings(**overrides), clock=clock)
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client):
    return await make_client()


@pytest.fixture
def proxies():
    """Append every ProxyProcess a test starts: whatever still runs is killed afterwards."""
    started: list[ProxyProcess] = []
    yield started
    for proxy in started:
        proxy.stop()
