"""LaunchDarkly's own Python server SDK (its TestData source: no network) sends its events to the
proxy with `events_uri`: evaluations, track and identify events reach a loopback upstream as the SDK
sent them, and the usage endpoints show the evaluation counts exactly."""

from __future__ import annotations

import asyncio
import json

import pytest
from ldclient import Context, LDClient
from ldclient.config import Config
from ldclient.integrations.test_data import TestData

from proxy.api.state import STORE
from proxy.launchdarkly.model.payload import VENDOR
from proxy.launchdarkly.state import LD_EVENT_STATS, LD_EVENTS
from proxy.storage import payloads
from tests.ld_events_support import SDK_KEY, ld_settings
from tests.ld_events_upstream import start_events_upstream, stop_events_upstream
from tests.support import ADMIN_TOKEN

EVALUATIONS = {"bool-flag": (7, 3), "color": 5}  # bool-flag: 7 true, 3 false; color: 5 of "green"


def run_sdk(events_uri: str, compress: bool) -> None:
    """What an application does: evaluate, track, identify; close() flushes the events."""
    td = TestData.data_source()
    td.update(td.flag("bool-flag").boolean_flag().variation_for_all(True).if_match("key", "off-user")
              .then_return(False))
    td.update(td.flag("color").variations("red", "green", "blue").variation_for_all(1))
    config = Config(SDK_KEY, update_processor_class=td, events_uri=events_uri, flush_interval=60,
                    diagnostic_opt_out=False, enable_event_compression=compress)
    client = LDClient(config=config)
    try:
        on, off = Context.builder("user-1").build(), Context.builder("off-user").build()
        for _ in range(EVALUATIONS["bool-flag"][0]):
            assert client.variation("bool-flag", on, False) is True
        for _ in range(EVALUATIONS["bool-flag"][1]):
            assert client.variation("bool-flag", off, True) is False
        for _ in range(EVALUATIONS["color"]):
            assert client.variation("color", on, "none") == "green"
        client.track("purchase", on, data={"sku": "a-1"}, metric_value=12.5)
        client.track("signup", off)
        client.identify(Context.builder("user-2").name("Ann").build())
        client.flush()
    finally:
        client.close()


@pytest.fixture
async def upstream():
    server = await start_events_upstream()
    yield server
    await stop_events_upstream(server)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
async def test_the_sdks_events_reach_the_upstream_and_the_usage_store(make_client, upstream, compress):
    proxy = await make_client(launchdarkly=ld_settings(upstream.url, flush_interval=3600.0))
    app = proxy.server.app
    url = str(proxy.make_url("")).rstrip("/")
    await asyncio.to_thread(run_sdk, url, compress)
    store = app[STORE]
    store.fold()
    stored = store.on_writer(payloads.oldest, VENDOR, 100)
    assert stored, "the SDK posted nothing"
    assert await app[LD_EVENTS].flush() == 0

    analytics = [p for p in upstream.accepted() if p.path == "/bulk"]
    events = [e for p in analytics for e in p.events]
    # Exactly what the SDK posted (the bodies the proxy stored), in order, nothing added or lost.
    posted = [e for _, stream, meta, body in stored if b'"/bulk"' in meta for e in json.loads(body)]
    assert events == posted
    diagnostics = [body for _, _, meta, body in stored if b'"/diagnostic"' in meta]
    assert app[LD_EVENT_STATS].events["server"] == len(events) + len(diagnostics)
    kinds = sorted(e["kind"] for e in events)
    assert kinds.count("summary") == 1 and kinds.count("identify") == 1 and kinds.count("custom") == 2
    [summary] = [e for e in events if e["kind"] == "summary"]
    counters = {flag: sorted((c["value"], c["count"]) for c in f["counters"]) for flag, f in summary["features"].items()}
    assert counters == {"bool-flag": [(False, 3), (True, 7)], "color": [("green", 5)]}
    [purchase] = [e for e in events if e["kind"] == "custom" and e["key"] == "purchase"]
    assert purchase["metricValue"] == 12.5 and purchase["data"] == {"sku": "a-1"}
    [identify] = [e for e in events if e["kind"] == "identify"]
    assert identify["context"]["key"] == "user-2" and identify["context"]["name"] == "Ann"
    for post in analytics:
        assert post.headers["authorization"] == SDK_KEY
        assert post.headers["x-launchdarkly-event-schema"] == "4"
        assert post.headers["user-agent"].startswith("PythonClient/")
    assert any(p.path == "/diagnostic" for p in upstream.accepted())

    raw = await (await proxy.get("/api/admin/client-metrics/features/bool-flag/raw?hoursBack=2",
                                 headers={"Authorization": ADMIN_TOKEN})).json()
    assert [(r["appName"], r["yes"], r["no"]) for r in raw["data"] if r["yes"] or r["no"]] == [
        ("launchdarkly:production", 7, 3)]
    toggles = await (await proxy.get("/api/client/metrics/feature-toggles",
                                     headers={"Authorization": ADMIN_TOKEN})).json()
    assert toggles["lastHour"]["color"] == {"yes": 5, "no": 0}
    scrape = await (await proxy.get("/internal-backstage/prometheus")).text()
    assert 'feature_toggle_usage_total{appName="launchdarkly:production",toggle="bool-flag",active="true"} 7' in scrape
