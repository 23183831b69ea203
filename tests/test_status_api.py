"""GET /internal-backstage/status over real HTTP: admin-token protected, per-environment queues of
the Unleash forwarder and the LaunchDarkly write queue, `degraded` and its causes, the last hour's
ingest and top flags and apps, the store against its limit."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from proxy.api.state import SETTINGS
from proxy.api.status.schemas import StatusDocument
from proxy.config import StatusSettings
from tests.forwarding import post_metrics
from tests.ld_events_support import ld_settings, sdk_headers, summary
from tests.ld_support import HEADERS, custom_metric
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, PROD_TOKEN, admin_headers

STATUS = "/internal-backstage/status"


async def status_of(client) -> dict:
    response = await client.get(STATUS, headers=admin_headers())
    assert response.status == 200, await response.text()
    body = await response.json()
    msgspec.json.decode(msgspec.json.encode(body), type=StatusDocument)  # the Struct's shape, every field
    return body


def queue(doc: dict, vendor: str, name: str) -> dict:
    section = next(v for v in doc["vendors"] if v["vendor"] == vendor)
    return next(q for q in section["queues"] if q["name"] == name)


def section(doc: dict, vendor: str) -> dict:
    return next(v for v in doc["vendors"] if v["vendor"] == vendor)


async def test_the_status_needs_an_admin_token_unless_auth_is_open(make_client):
    client = await make_client()
    assert (await client.get(STATUS)).status == 401
    assert (await client.get(STATUS, headers={"Authorization": CLIENT_TOKEN})).status == 403
    assert (await client.get(STATUS, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).status == 200
    open_client = await make_client(auth="open", data_dir=str(client.server.app[SETTINGS].data_dir) + "-open")
    assert (await open_client.get(STATUS)).status == 200


async def test_a_standalone_proxy_is_healthy_and_counts_the_last_hour(client, clock):
    await post_metrics(client, {"flag-a": (5, 1), "flag-b": (2, 0)}, clock.now(), app="app-1")
    await post_metrics(client, {"flag-b": (1, 1)}, clock.now(), app="app-2", token=PROD_TOKEN)
    response = await client.get(STATUS, headers=admin_headers())
    doc = msgspec.json.decode(await response.read(), type=StatusDocument)
    assert doc.status == "healthy" and doc.degradations == [] and doc.source == "proxy"
    assert len(doc.ingestPerMinute) == 60 and doc.ingestPerMinute[-1].minute == int(clock.now() // 60 * 60)
    assert doc.ingestPerMinute[-1].evaluations == 10 and sum(m.evaluations for m in doc.ingestPerMinute) == 10
    unleash = next(v for v in doc.vendors if v.vendor == "unleash")
    assert [(e.name, e.evaluations) for e in unleash.topFlags] == [("flag-a", 6), ("flag-b", 4)]
    assert [(e.name, e.evaluations) for e in unleash.topApps] == [("app-1", 8), ("app-2", 2)]
    assert unleash.upstream is None and {q.state for q in unleash.queues} <= {"local"}
    assert doc.store.sizeBytes > 0 and doc.store.limitBytes == client.server.app[SETTINGS].max_db_size


async def test_forwarding_shows_pending_sent_and_dead_letters(forwarding_client, stub, clock):
    from aiohttp import web

    client = await forwarding_client(shutdown_flush_timeout=0.5)  # the stub may stop first

    async def refuse_bad(request, rec):
        return web.Response(status=400 if any(m["featureName"] == "bad" for m in rec.body["metrics"]) else 202)

    stub.default = refuse_bad
    await post_metrics(client, {"good": (3, 0), "bad": (1, 0)}, clock.now())
    await client.forwarder.flush()
    await post_metrics(client, {"later": (7, 2)}, clock.now(), token=PROD_TOKEN)
    doc = await status_of(client)
    dev, prod = queue(doc, "unleash", "development"), queue(doc, "unleash", "production")
    assert dev["state"] == "healthy" and dev["lastSuccess"] == clock.now() and dev["deadLetters"] == 1
    assert "400" in dev["newestDeadLetterReason"] and dev["pendingPayloads"] == 0
    assert (prod["pendingRows"], prod["pendingCount"], prod["lastSuccess"]) == (1, 9, None)
    assert doc["status"] == "degraded"
    assert [(d["cause"], d["queue"]) for d in doc["degradations"]] == [("dead_letters", "development")]
    assert section(doc, "unleash")["upstream"] == stub.url


async def test_an_upstream_failing_past_the_threshold_turns_the_status_degraded(forwarding_client, stub, clock):
    client = await forwarding_client({"status": StatusSettings(failing_after=30.0)})
    stub.default = 503
    await post_metrics(client, {"flag": (1, 0)}, clock.now())
    flushing = asyncio.create_task(client.forwarder.flush())
    while len(stub.received) < 2:
        await asyncio.sleep(0.01)
    doc = await status_of(client)
    dev = queue(doc, "unleash", "development")
    assert dev["state"] == "failing" and dev["stateSince"] == clock.now() and "503" in dev["lastError"]
    assert dev["pendingPayloads"] == 1 and dev["inFlight"] == 1 and dev["attempts"] >= 1
    assert clock.now() <= dev["nextAttempt"] <= clock.now() + 0.05  # within retry_max
    assert doc["status"] == "healthy"  # failing, but not for 30 s yet
    clock.advance(31)
    doc = await status_of(client)
    assert doc["status"] == "degraded" and doc["degradations"][0]["cause"] == "upstream_failing"
    stub.default = 202
    await flushing
    doc = await status_of(client)
    assert queue(doc, "unleash", "development")["state"] == "healthy" and doc["status"] == "healthy"


async def test_a_refused_environment_is_paused_and_degraded(forwarding_client, stub, clock):
    client = await forwarding_client()
    stub.default = 401
    await post_metrics(client, {"flag": (1, 0)}, clock.now())
    await client.forwarder.flush()
    doc = await status_of(client)
    dev = queue(doc, "unleash", "development")
    assert dev["state"] == "paused" and "401" in dev["pausedReason"] and dev["nextAttempt"] > clock.now()
    assert [d["cause"] for d in doc["degradations"]] == ["paused"]


async def test_a_store_past_its_fraction_is_degraded(make_client):
    client = await make_client(status=StatusSettings(store_percent=1), max_db_size=64 * 1024)
    doc = await status_of(client)
    assert doc["status"] == "degraded" and [d["cause"] for d in doc["degradations"]] == ["store_full"]
    assert doc["store"]["fraction"] > doc["thresholds"]["storeFraction"]


@pytest.fixture
async def ld_upstream(tmp_path, clock):
    from tests.ld_upstream import start_stand_in, stop_stand_in

    stand_in = await start_stand_in(tmp_path, clock)
    yield stand_in
    await stop_stand_in(stand_in)


async def test_the_launchdarkly_write_queue_has_its_section(make_client, ld_upstream, clock):
    from tests.ld_support import LD_TOKEN
    from tests.ld_upstream import UPSTREAM_TOKEN

    client = await make_client(launchdarkly={
        "access_tokens": [LD_TOKEN], "api_url": ld_upstream.url, "api_token": UPSTREAM_TOKEN,
        "retry_initial": 5.0, "retry_max": 5.0, "request_timeout": 5.0})
    ld_upstream.down = True
    response = await client.post("/api/v2/metrics/proj", json=custom_metric("m"), headers=HEADERS)
    assert response.status == 202
    clock.advance(12)
    doc = await status_of(client)
    ld = section(doc, "launchdarkly")
    proj = queue(doc, "launchdarkly", "proj")
    assert ld["upstream"] == ld_upstream.url and proj["kind"] == "project"
    assert proj["pendingPayloads"] == 1 and proj["oldestPendingAge"] == 12.0 and proj["deadLetters"] == 0
    assert UPSTREAM_TOKEN not in str(doc) and LD_TOKEN not in str(doc)


def test_secrets_are_redacted():
    from proxy.api.status.queues import redact_secret, redact_url

    assert redact_url("https://user:pw@unleash.example:4242/api") == "https://***@unleash.example:4242/api"
    assert redact_url("http://unleash:4242/api") == "http://unleash:4242/api"
    assert redact_secret("sdk-1234567890abcd") == "****abcd" and redact_secret("short") == "****"


async def test_an_environment_without_an_upstream_token_is_paused(forwarding_client, clock):
    from tests.forwarding import UPSTREAM_DEV

    client = await forwarding_client(tokens={"development": UPSTREAM_DEV})
    await post_metrics(client, {"flag": (2, 0)}, clock.now(), token=PROD_TOKEN)
    doc = await status_of(client)
    prod = queue(doc, "unleash", "production")
    assert prod["state"] == "paused" and "no upstream token" in prod["pausedReason"] and prod["pendingCount"] == 2
    assert [(d["cause"], d["queue"]) for d in doc["degradations"]] == [("paused", "production")]


async def test_the_page_is_served_without_a_token_and_loads_nothing_from_elsewhere(client):
    from proxy.api.status.routes import PAGE_FILES

    for path, (_name, content_type) in PAGE_FILES.items():
        response = await client.get(path)
        assert response.status == 200 and response.content_type == content_type
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    html = await (await client.get("/")).text()
    assert "http://" not in html and "https://" not in html  # no CDN, no font service
    assert ADMIN_TOKEN not in html


async def test_the_busiest_flags_are_summed_again_after_a_while_not_on_every_read(client, clock):
    from proxy.storage.usage.evaluations import BUSIEST_REFRESH

    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())
    assert section(await status_of(client), "unleash")["topFlags"] == [{"name": "flag-a", "evaluations": 1}]
    await post_metrics(client, {"flag-b": (5, 0)}, clock.now())
    doc = await status_of(client)
    assert section(doc, "unleash")["topFlags"] == [{"name": "flag-a", "evaluations": 1}]
    assert doc["ingestPerMinute"][-1]["evaluations"] == 6  # the minutes are always fresh
    clock.advance(BUSIEST_REFRESH)
    assert [e["name"] for e in section(await status_of(client), "unleash")["topFlags"]] == ["flag-b", "flag-a"]


async def test_a_launchdarkly_queue_failing_then_replayed(make_client, ld_upstream, clock):
    from tests.ld_support import LD_TOKEN
    from tests.ld_upstream import UPSTREAM_TOKEN

    client = await make_client(launchdarkly={
        "access_tokens": [LD_TOKEN], "api_url": ld_upstream.url, "api_token": UPSTREAM_TOKEN,
        "retry_initial": 0.01, "retry_max": 0.05, "request_timeout": 5.0})
    ld_upstream.down = True
    assert (await client.post("/api/v2/metrics/proj", json=custom_metric("m"), headers=HEADERS)).status == 202

    async def proj() -> dict:
        return queue(await status_of(client), "launchdarkly", "proj")

    while (await proj())["attempts"] < 2:  # the replay is retried while LaunchDarkly answers 503
        await asyncio.sleep(0.02)
    failing = await proj()
    assert failing["state"] == "failing" and "503" in failing["lastError"] and failing["stateSince"] == clock.now()
    ld_upstream.down = False
    while (await proj())["pendingPayloads"]:
        await asyncio.sleep(0.02)
    replayed = await proj()
    assert replayed["state"] == "healthy" and replayed["lastSuccess"] == clock.now()


async def test_each_vendor_section_counts_its_own_evaluations_and_the_document_both(make_client, clock):
    """LaunchDarkly's summary events share the usage ledger (under `launchdarkly:<env>`): its section
    lists them, Unleash's does not, and the document's ingest per minute adds both."""
    client = await make_client(launchdarkly=ld_settings())
    await post_metrics(client, {"flag-a": (5, 1), "shared-flag": (1, 0)}, clock.now(), app="app-1")
    end = int(clock.now() * 1000)
    events = [summary({"ld-flag": [{"value": True, "variation": 0, "version": 1, "count": 7}],
                       "shared-flag": [{"value": False, "variation": 1, "version": 1, "count": 2}]}, end)]
    assert (await client.post("/bulk", json=events, headers=sdk_headers())).status == 202
    doc = await status_of(client)
    unleash, ld = section(doc, "unleash"), section(doc, "launchdarkly")
    tops = lambda part, key: [(e["name"], e["evaluations"]) for e in part[key]]  # noqa: E731
    assert tops(unleash, "topFlags") == [("flag-a", 6), ("shared-flag", 1)]
    assert tops(unleash, "topApps") == [("app-1", 7)]
    assert tops(ld, "topFlags") == [("ld-flag", 7), ("shared-flag", 2)]
    assert tops(ld, "topApps") == [("launchdarkly:production", 9)]
    assert sum(m["evaluations"] for m in unleash["ingestPerMinute"]) == 7
    assert sum(m["evaluations"] for m in ld["ingestPerMinute"]) == 9
    assert sum(m["evaluations"] for m in doc["ingestPerMinute"]) == 16
