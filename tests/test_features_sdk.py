"""A real Python SDK (`UnleashClient` from PyPI) pointed only at the proxy: it gets its flag
definitions from the proxy, evaluates them correctly, and its usage metrics reach the proxy's
store (and, once the forwarder exists, the loopback upstream)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from proxy.unleash.state import FEATURE_SOURCE
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, FIXTURES
from tests.upstream_standin import UPSTREAM_DEV_TOKEN, UpstreamStandIn

UnleashClient = pytest.importorskip("UnleashClient").UnleashClient
# The SDK's scheduler library (UnleashClient depends on apscheduler < 4).
from apscheduler.executors.pool import ThreadPoolExecutor  # noqa: E402
from apscheduler.schedulers.background import BackgroundScheduler  # noqa: E402

# Bounds on waiting for the SDK's own scheduler (it runs on real time; metrics_interval is 1 s).
SDK_WAIT_SECONDS = 15.0


class PollingEvent(threading.Event):
    """A threading.Event whose timed wait sleeps in short steps instead of blocking on a lock.

    Under libfaketime with a shifted clock (.ci/run runs the suite 400 days ahead) a timed wait on a
    Python lock never times out: CPython takes the deadline from the shifted monotonic clock and
    passes it to sem_clockwait, which libfaketime 0.9.10 does not intercept, so the kernel waits
    until the real monotonic clock gets there, 400 days later. time.sleep (clock_nanosleep, which
    libfaketime does intercept) keeps time under the shift as without it."""

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None:
            return super().wait()
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.02))
        return True


class SleepingBackgroundScheduler(BackgroundScheduler):
    """The scheduler the SDK makes for itself (a BackgroundScheduler with its own thread pool),
    except that its thread waits for the next job on a PollingEvent. The stock one waits in
    Event.wait(seconds until the next job): under a shifted clock its metrics job never ran, and
    the SDK's metrics never arrived."""

    def start(self, *args, **kwargs) -> None:
        self._event = PollingEvent()  # BackgroundScheduler.start keeps an unset event it finds
        super().start(*args, **kwargs)


@pytest.fixture
async def upstream(aiohttp_server):
    standin = UpstreamStandIn(json.loads((FIXTURES / "features" / "client-features.json").read_text()))
    standin.server = await aiohttp_server(standin.app())
    standin.url = str(standin.server.make_url("/api"))
    return standin


def evaluate(sdk) -> dict[str, object]:
    return {
        "harness.flag-a": sdk.is_enabled("harness.flag-a"),
        "harness.flag-b": sdk.is_enabled("harness.flag-b"),
        "harness.disabled": sdk.is_enabled("harness.disabled"),
        "beta.segmented for user 7": sdk.is_enabled("beta.segmented", {"userId": "7"}),
        "beta.segmented for user 1": sdk.is_enabled("beta.segmented", {"userId": "1"}),
        "variant": sdk.get_variant("harness.variant-flag", {"userId": "1"})["name"],
        # payments.checkout is outside the SDK token's project: the proxy never served it.
        "payments.checkout for user 42": sdk.is_enabled("payments.checkout", {"userId": "42"}),
    }


async def wait_for(predicate, what: str):
    deadline = time.monotonic() + SDK_WAIT_SECONDS
    while time.monotonic() < deadline:
        found = await predicate()
        if found:
            return found
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {SDK_WAIT_SECONDS}s waiting for {what}")


async def sdk_usage(client) -> dict | None:
    resp = await client.get("/api/client/metrics/feature-toggles", headers={"Authorization": ADMIN_TOKEN})
    last_hour = (await resp.json())["lastHour"]
    return last_hour if "harness.flag-a" in last_hour else None


@pytest.fixture
async def sdk_against_proxy(make_client, upstream, tmp_path):
    client = await make_client(
        upstream={"url": upstream.url, "tokens": {"development": UPSTREAM_DEV_TOKEN}, "flush_interval": 0.2},
        features_refresh_interval=3600.0,
    )
    await client.app[FEATURE_SOURCE].refresh()
    sdk = UnleashClient(
        url=str(client.make_url("/api")),
        app_name="sdk-under-test",
        instance_id="sdk-1",
        custom_headers={"Authorization": CLIENT_TOKEN},
        refresh_interval=1,
        metrics_interval=1,
        cache_directory=str(tmp_path / "sdk-cache"),
        scheduler=SleepingBackgroundScheduler(executors={"sdk-jobs": ThreadPoolExecutor()}),
        scheduler_executor="sdk-jobs",
    )
    # The SDK is synchronous; it runs on a thread while this loop serves the proxy.
    await asyncio.to_thread(sdk.initialize_client)
    try:
        yield client, sdk
    finally:
        await asyncio.to_thread(sdk.destroy)


async def test_a_real_sdk_evaluates_flags_served_by_the_proxy(sdk_against_proxy):
    client, sdk = sdk_against_proxy
    assert await asyncio.to_thread(evaluate, sdk) == {
        "harness.flag-a": True,
        "harness.flag-b": False,
        "harness.disabled": False,
        "beta.segmented for user 7": True,
        "beta.segmented for user 1": False,
        "variant": "blue",
        "payments.checkout for user 42": False,
    }
    usage = await wait_for(lambda: sdk_usage(client), "the SDK's metrics in the proxy's store")
    assert usage["harness.flag-a"]["yes"] >= 1
    assert usage["harness.flag-b"]["no"] >= 1


async def test_the_sdks_metrics_arrive_at_the_upstream(sdk_against_proxy, upstream):
    pytest.importorskip("proxy.unleash.upstream.forwarder", reason="the metrics forwarder is built in a parallel branch")
    client, sdk = sdk_against_proxy
    await asyncio.to_thread(sdk.is_enabled, "harness.flag-a")

    async def forwarded():
        return [r for r in upstream.seen("/api/client/metrics") if b"harness.flag-a" in r.body]

    assert await wait_for(forwarded, "the SDK's metrics at the upstream")
