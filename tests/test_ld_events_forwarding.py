"""SDK events out: batches bounded in events and bytes, gzip, headers, a Payload-ID per batch kept
across retries and restarts, and the outcome table row by row against a loopback upstream."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from proxy.api.state import STORE
from proxy.launchdarkly.state import LD_EVENT_STATS, LD_EVENTS
from tests.ld_events_support import (
    CLIENT_SIDE_ID,
    MOBILE_KEY,
    SDK_KEY,
    STAGING_SDK_KEY,
    index,
    ld_settings,
    sdk_headers,
)
from tests.ld_events_upstream import start_events_upstream, stop_events_upstream
from tests.ld_support import LD_TOKEN
from tests.test_status_api import queue, status_of

IMPORT_TOKEN = "api-import-only-token"


@pytest.fixture
async def upstream():
    server = await start_events_upstream()
    yield server
    await stop_events_upstream(server)


@pytest.fixture
def make_proxy(make_client, upstream):
    async def make(**extra):
        options = {"flush_interval": 3600.0, "import_token": IMPORT_TOKEN, "shutdown_flush_timeout": 2.0}
        options.update(extra)
        return await make_client(launchdarkly=ld_settings(upstream.url, **options))

    return make


def events_of(n: int, start: int = 0, user: str = "u") -> list[dict]:
    return [index(1_000 + i, user=f"{user}{i}") for i in range(start, start + n)]


async def post(proxy, events, key=SDK_KEY, path="/bulk", **headers):
    response = await proxy.post(path, json=events, headers=sdk_headers(key, **headers))
    assert response.status == 202, await response.text()


async def flush(proxy) -> int:
    return await proxy.server.app[LD_EVENTS].flush()


def dead_letters(proxy) -> list[tuple]:
    return proxy.server.app[STORE].db.execute(
        "SELECT environment, status FROM dead_letters WHERE vendor = 'launchdarkly.events' ORDER BY id").fetchall()


async def test_events_arrive_exactly_gzip_with_the_credential_and_headers(make_proxy, upstream):
    proxy = await make_proxy()
    first, second = events_of(3), events_of(2, start=3)
    await post(proxy, first, payload_id="sdk-1", **{"X-LaunchDarkly-Tags": "application-id/shop"})
    await post(proxy, second, payload_id="sdk-2", **{"X-LaunchDarkly-Tags": "application-id/shop"})
    assert await flush(proxy) == 0
    [sent] = upstream.posts
    assert sent.path == "/bulk" and sent.events == first + second  # merged, in order, unchanged
    assert sent.headers["content-encoding"] == "gzip"
    assert sent.headers["authorization"] == SDK_KEY
    assert sent.headers["x-launchdarkly-event-schema"] == "4"
    assert sent.headers["x-launchdarkly-tags"] == "application-id/shop"
    assert sent.headers["user-agent"] == "PythonClient/9.20.0"
    uuid.UUID(sent.payload_id)  # a new id per batch, not the SDK's
    assert sent.payload_id not in ("sdk-1", "sdk-2")


async def test_each_platform_keeps_its_path_and_credential(make_proxy, upstream):
    proxy = await make_proxy()
    await post(proxy, events_of(1), MOBILE_KEY, "/mobile/events/bulk")
    assert (await proxy.post(f"/events/bulk/{CLIENT_SIDE_ID}", json=events_of(1))).status == 202
    assert (await proxy.post("/v2/event-data-import/proj/production", headers={"Authorization": LD_TOKEN},
                             json=[{"kind": "custom", "key": "k", "creationDate": 1}])).status == 202
    assert (await proxy.post("/diagnostic", json={"kind": "diagnostic", "n": 1}, headers=sdk_headers())).status == 202
    assert (await proxy.post("/diagnostic", json={"kind": "diagnostic", "n": 2}, headers=sdk_headers())).status == 202
    await flush(proxy)
    seen = sorted((p.path, p.headers.get("authorization"), str(p.body)) for p in upstream.posts)
    assert seen == sorted([
        ("/mobile", MOBILE_KEY, str(events_of(1))),
        (f"/events/bulk/{CLIENT_SIDE_ID}", None, str(events_of(1))),
        ("/v2/event-data-import/proj/production", IMPORT_TOKEN, str([{"kind": "custom", "key": "k", "creationDate": 1}])),
        ("/diagnostic", SDK_KEY, str({"kind": "diagnostic", "n": 1})),  # diagnostics are never merged
        ("/diagnostic", SDK_KEY, str({"kind": "diagnostic", "n": 2})),
    ])


async def test_batches_are_bounded_in_events_and_in_bytes(make_proxy, upstream):
    proxy = await make_proxy(events_batch_events=4, events_batch_bytes=2048)
    await post(proxy, events_of(10))
    await flush(proxy)
    assert [len(p.events) for p in upstream.posts] == [4, 4, 2]
    upstream.posts.clear()
    big = [index(i, user="x" * 600) for i in range(6)]  # ~650 bytes each: 3 fit in 2048
    await post(proxy, big)
    await flush(proxy)
    assert [len(p.events) for p in upstream.posts] == [3, 3]
    assert sum((p.events for p in upstream.posts), []) == big


async def test_retryable_answers_are_retried_with_the_same_payload_id(make_proxy, upstream):
    proxy = await make_proxy()
    upstream.script = [(429, {"Retry-After": "0"}), (500, {}), (502, {}), (503, {}), (504, {}), (408, {})]
    await post(proxy, events_of(2))
    await flush(proxy)
    assert [p.status for p in upstream.posts] == [429, 500, 502, 503, 504, 408, 202]
    assert len({p.payload_id for p in upstream.posts}) == 1
    assert upstream.accepted_events() == events_of(2)


async def test_a_413_splits_in_halves_and_a_single_event_too_large_is_dead_lettered(make_proxy, upstream):
    proxy = await make_proxy()
    upstream.answer = lambda post: 413 if len(post.events) > 2 or any(e.get("huge") for e in post.events) else 202
    events = events_of(7)
    events[5]["huge"] = True
    await post(proxy, events)
    await flush(proxy)
    delivered = upstream.accepted_events()
    assert sorted(delivered, key=str) == sorted([e for e in events if not e.get("huge")], key=str)
    assert dead_letters(proxy) == [("production:server", 413)]
    assert proxy.server.app[LD_EVENT_STATS].dropped == {"rejected_413": 1}


async def test_a_400_is_bisected_down_to_the_bad_events(make_proxy, upstream):
    proxy = await make_proxy()
    upstream.answer = lambda post: 400 if any(e.get("bad") for e in post.events) else 202
    events = events_of(16)
    for i in (3, 11):
        events[i]["bad"] = True
    await post(proxy, events)
    await flush(proxy)
    assert sorted(upstream.accepted_events(), key=str) == sorted([e for e in events if not e.get("bad")], key=str)
    assert dead_letters(proxy) == [("production:server", 400), ("production:server", 400)]


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refused_credential_pauses_alone_while_another_keeps_flowing(make_proxy, upstream, clock, status):
    proxy = await make_proxy(auth_retry_interval=60.0)
    upstream.answer = lambda post: status if post.headers.get("authorization") == SDK_KEY else 202
    await post(proxy, events_of(2, user="p"))
    await post(proxy, events_of(2, user="s"), STAGING_SDK_KEY)
    assert await flush(proxy) == 1  # production's batch is kept
    assert upstream.accepted_events() == events_of(2, user="s")
    refused = len(upstream.posts)
    await post(proxy, events_of(1, user="s2"), STAGING_SDK_KEY)
    await post(proxy, events_of(1, user="p2"))
    await flush(proxy)  # staging flows; production waits its pause out without a request
    assert upstream.accepted_events()[-1:] == events_of(1, user="s2")
    assert len(upstream.posts) == refused + 1
    assert dead_letters(proxy) == []
    doc = await status_of(proxy)  # what the status page and `metrics-proxy status` show
    production = queue(doc, "launchdarkly", "production:server")
    assert (production["kind"], production["state"], production["pendingPayloads"]) == ("credential", "paused", 2)
    assert str(status) in production["pausedReason"] and doc["status"] == "degraded"
    staging = queue(doc, "launchdarkly", "staging:server")  # delivered, and it says when
    assert (staging["state"], staging["pendingPayloads"]) == ("healthy", 0) and staging["lastSuccess"] is not None
    upstream.answer = None
    clock.advance(61)
    assert await flush(proxy) == 0
    # The pause over, production's kept batches go out, oldest first.
    assert upstream.accepted_events()[-3:] == events_of(2, user="p") + events_of(1, user="p2")
    assert len(upstream.accepted_events()) == 6


async def test_a_timeout_after_the_body_went_out_is_resent_with_the_same_payload_id(make_proxy, upstream):
    proxy = await make_proxy(request_timeout=0.3)
    upstream.hang = 1.0
    await post(proxy, events_of(1))
    flushing = proxy.server.app[LD_EVENTS]
    task = asyncio.create_task(flushing.flush())
    while len(upstream.posts) < 2:
        await asyncio.sleep(0.05)
    upstream.hang = 0.0
    await task
    assert len({p.payload_id for p in upstream.posts}) == 1
    assert flushing.delivery_stats.ambiguous_batches == 1


async def test_the_payload_id_survives_a_restart_and_shutdown_flushes(make_client, upstream, tmp_path):
    settings = ld_settings(upstream.url, flush_interval=3600.0, shutdown_flush_timeout=0.5)
    proxy = await make_client(launchdarkly=settings)
    upstream.answer = lambda post: 503
    await post(proxy, events_of(3))
    await proxy.close()  # SIGTERM's path: the last flush runs, the upstream refuses, the batch stays
    before = {p.payload_id for p in upstream.posts}
    assert len(before) == 1
    upstream.answer = None
    restarted = await make_client(launchdarkly=settings)
    await flush(restarted)
    assert {p.payload_id for p in upstream.accepted()} == before
    assert upstream.accepted_events() == events_of(3)
    upstream.posts.clear()
    await post(restarted, events_of(2, start=3))
    await restarted.close()  # the final flush sends what was acknowledged
    assert upstream.accepted_events() == events_of(2, start=3)


async def test_without_events_url_events_stay_local(make_client, upstream):
    proxy = await make_client(launchdarkly=ld_settings(None, flush_interval=3600.0))
    await post(proxy, events_of(3))
    assert await flush(proxy) == 0
    assert upstream.posts == []
    store = proxy.server.app[STORE]
    assert store.db.execute("SELECT count(*) FROM outbox_batches").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM inbound_payloads").fetchone()[0] == 0


async def test_with_open_auth_an_unlisted_key_goes_upstream_with_its_own_events(make_client, upstream):
    proxy = await make_client(auth="open", launchdarkly=ld_settings(upstream.url, flush_interval=3600.0))
    other = "sdk-99999999-1111-4222-8333-944455556666"
    await post(proxy, events_of(2, user="o"), other)
    await post(proxy, events_of(1, user="p"))
    await flush(proxy)
    sent = {p.headers["authorization"]: p.events for p in upstream.accepted()}
    assert sent == {other: events_of(2, user="o"), SDK_KEY: events_of(1, user="p")}


async def test_the_scrape_shows_each_streams_batches_and_pause(make_proxy, upstream):
    proxy = await make_proxy(auth_retry_interval=60.0)
    upstream.answer = lambda post: 401 if post.headers.get("authorization") == SDK_KEY else 202
    await post(proxy, events_of(2, user="p"))
    await post(proxy, events_of(1, user="s"), STAGING_SDK_KEY)
    await flush(proxy)
    text = await (await proxy.get("/internal-backstage/prometheus")).text()
    assert 'metrics_proxy_launchdarkly_event_batches{stream="production:server"} 1' in text
    assert 'metrics_proxy_launchdarkly_event_stream_paused{stream="production:server"} 1' in text
    assert 'metrics_proxy_launchdarkly_event_stream_paused{stream="staging:server"}' not in text  # nothing kept
