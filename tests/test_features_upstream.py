"""Feature documents polled from an upstream (a loopback stand-in for Unleash): stored before they
are served, refreshed with If-None-Match, kept in service when the upstream fails or is gone,
across a restart and a kill -9."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import aiohttp
import pytest

from proxy.unleash.state import FEATURE_CACHE, FEATURE_SOURCE
from tests.support import CLIENT_TOKEN, FIXTURES, PROD_TOKEN, ProxyProcess
from tests.upstream_standin import UPSTREAM_DEV_TOKEN, UpstreamStandIn

FEATURES_FILE = FIXTURES / "features" / "client-features.json"


def fixture_document() -> dict:
    return json.loads(FEATURES_FILE.read_text())


@pytest.fixture
async def upstream(aiohttp_server):
    standin = UpstreamStandIn(fixture_document())
    standin.server = await aiohttp_server(standin.app())
    standin.url = str(standin.server.make_url("/api"))
    return standin


def with_upstream(upstream: UpstreamStandIn) -> dict:
    # A long interval: the tests poll explicitly through the source's refresh().
    return dict(
        upstream={"url": upstream.url, "tokens": {"development": UPSTREAM_DEV_TOKEN}},
        features_refresh_interval=3600.0,
    )


def auth(token: str = CLIENT_TOKEN, **extra: str) -> dict[str, str]:
    return {"Authorization": token, **extra}


async def prometheus_text(client) -> str:
    return await (await client.get("/internal-backstage/prometheus")).text()


async def test_a_polled_document_is_stored_and_served(make_client, make_settings, upstream):
    client = await make_client(**with_upstream(upstream))
    await client.app[FEATURE_SOURCE].refresh()

    with sqlite3.connect(make_settings().database_path) as db:
        rows = db.execute("SELECT environment, document, upstream_etag FROM feature_documents").fetchall()
    assert [(env, etag) for env, _, etag in rows] == [("development", upstream.etag)]
    assert json.loads(rows[0][1]) == upstream.document

    resp = await client.get("/api/client/features", headers=auth())
    assert resp.status == 200
    served = await resp.json()
    assert [f["name"] for f in served["features"]] == [
        f["name"] for f in upstream.document["features"] if f["project"] == "default"
    ]
    fetch = upstream.seen("/api/client/features")[0]
    assert fetch.headers["Authorization"] == UPSTREAM_DEV_TOKEN
    assert fetch.headers["UNLEASH-APPNAME"] == "metrics-proxy"


async def test_served_document_equals_the_upstreams_after_filtering(make_client, upstream):
    client = await make_client(**with_upstream(upstream))
    await client.app[FEATURE_SOURCE].refresh()
    async with aiohttp.ClientSession() as session:
        async with session.get(upstream.url + "/client/features", headers={"Authorization": UPSTREAM_DEV_TOKEN}) as r:
            direct = await r.json()
    via_proxy = await (await client.get("/api/client/features?namePrefix=harness.", headers=auth())).json()

    expected = [f for f in direct["features"] if f["project"] == "default" and f["name"].startswith("harness.")]
    assert expected, "the filter must leave something to compare"
    assert via_proxy["features"] == expected
    assert via_proxy["segments"] == direct["segments"]
    assert via_proxy["version"] == direct["version"]


async def test_polls_are_conditional_and_a_new_revision_is_served(make_client, upstream):
    client = await make_client(**with_upstream(upstream))
    source = client.app[FEATURE_SOURCE]
    await source.refresh()
    before = await client.get("/api/client/features", headers=auth())
    await source.refresh()
    assert any(r.headers.get("If-None-Match") == upstream.etag for r in upstream.seen("/api/client/features"))
    assert 'metrics_proxy_features_polls_total{environment="development",outcome="not_modified"}' in (
        await prometheus_text(client)
    )

    changed = fixture_document()
    changed["features"][0]["enabled"] = False
    upstream.publish(changed)
    await source.refresh()
    after = await client.get("/api/client/features", headers=auth(**{"If-None-Match": before.headers["ETag"]}))
    assert after.status == 200
    assert (await after.json())["features"][0]["enabled"] is False


async def test_upstream_errors_keep_the_last_good_document(make_client, upstream, clock):
    client = await make_client(**with_upstream(upstream))
    source = client.app[FEATURE_SOURCE]
    await source.refresh()
    good = await client.get("/api/client/features", headers=auth())

    upstream.failing_status = 500
    await source.refresh()
    upstream.failing_status = None
    upstream.publish({"flags": "not a client features document"})
    await source.refresh()
    clock.advance(120)
    await upstream.server.close()  # and then gone altogether
    await source.refresh()

    resp = await client.get("/api/client/features", headers=auth())
    assert resp.status == 200
    assert resp.headers["ETag"] == good.headers["ETag"]
    text = await prometheus_text(client)
    assert 'metrics_proxy_features_age_seconds{environment="development"} 120.0' in text
    assert 'metrics_proxy_features_polls_total{environment="development",outcome="failed"} 3.0' in text


async def test_stored_documents_are_served_at_start_when_the_upstream_is_gone(make_client, upstream):
    first = await make_client(**with_upstream(upstream))
    await first.app[FEATURE_SOURCE].refresh()
    served = await first.get("/api/client/features", headers=auth())
    body, etag = await served.read(), served.headers["ETag"]
    await first.close()
    await upstream.server.close()

    restarted = await make_client(**with_upstream(upstream))
    assert restarted.app[FEATURE_CACHE].ready()
    resp = await restarted.get("/api/client/features", headers=auth())
    assert resp.status == 200
    assert resp.headers["ETag"] == etag
    assert await resp.read() == body


async def test_stored_documents_are_served_while_the_upstream_has_not_answered(make_client, upstream):
    first = await make_client(**with_upstream(upstream))
    await first.app[FEATURE_SOURCE].refresh()
    etag = (await first.get("/api/client/features", headers=auth())).headers["ETag"]
    await first.close()

    upstream.stalled = asyncio.Event()
    polls_before = len(upstream.seen("/api/client/features"))
    restarted = await make_client(**with_upstream(upstream))
    try:
        for _ in range(500):  # until the start-up poll is held at the upstream (bounded)
            if len(upstream.seen("/api/client/features")) > polls_before:
                break
            await asyncio.sleep(0.01)
        assert len(upstream.seen("/api/client/features")) > polls_before
        resp = await restarted.get("/api/client/features", headers=auth())
        assert resp.status == 200 and resp.headers["ETag"] == etag
    finally:
        upstream.stalled.set()


async def test_not_ready_and_503_until_an_environment_has_a_document(make_client, upstream):
    upstream.failing_status = 503
    client = await make_client(**with_upstream(upstream))
    cache, source = client.app[FEATURE_CACHE], client.app[FEATURE_SOURCE]
    await source.refresh()
    assert not cache.ready()
    ready = await client.get("/internal-backstage/ready")
    assert ready.status == 503 and (await ready.json())["status"] == "NOT_READY"
    resp = await client.get("/api/client/features", headers=auth())
    assert resp.status == 503
    assert resp.headers["Retry-After"]
    assert (await resp.json())["name"] == "ServiceUnavailableError"

    upstream.failing_status = None
    await source.refresh()
    assert cache.ready()
    assert (await client.get("/internal-backstage/ready")).status == 200
    assert (await client.get("/api/client/features", headers=auth())).status == 200
    # production has no upstream token, so it never gets definitions: 503 rather than an empty list.
    assert (await client.get("/api/client/features", headers=auth(PROD_TOKEN))).status == 503


async def test_a_killed_proxy_serves_its_stored_document_with_the_upstream_gone(upstream, tmp_path):
    proxy = ProxyProcess(tmp_path / "data", extra_env={
        "METRICS_PROXY_UPSTREAM_URL": upstream.url,
        "METRICS_PROXY_UPSTREAM_TOKENS": f"development={UPSTREAM_DEV_TOKEN}",
        "METRICS_PROXY_FEATURES_REFRESH_INTERVAL": "0.2",
    })
    try:
        await asyncio.to_thread(proxy.start)
        url = proxy.url + "/api/client/features"
        async with aiohttp.ClientSession() as session:
            status = None
            for _ in range(200):  # wait (bounded) for the real process's first poll
                async with session.get(url, headers=auth()) as resp:
                    status, body = resp.status, await resp.read()
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200, proxy.log()[-2000:]

            proxy.kill()
            await upstream.server.close()
            await asyncio.to_thread(proxy.start)
            async with session.get(url, headers=auth()) as resp:
                assert resp.status == 200
                assert await resp.read() == body
    finally:
        proxy.stop()


async def test_an_unreadable_stored_document_waits_for_the_upstream(make_client, make_settings, upstream, caplog):
    first = await make_client(**with_upstream(upstream))
    await first.app[FEATURE_SOURCE].refresh()
    await first.close()
    with sqlite3.connect(make_settings().database_path) as db:
        db.execute("UPDATE feature_documents SET document = ?", (b"{truncated",))
    upstream.failing_status = 503

    with caplog.at_level(logging.ERROR):
        restarted = await make_client(**with_upstream(upstream))
    assert any("stored features for development are unreadable" in r.message for r in caplog.records)
    assert not restarted.app[FEATURE_CACHE].ready()
    upstream.failing_status = None
    await restarted.app[FEATURE_SOURCE].refresh()
    assert restarted.app[FEATURE_CACHE].ready()
