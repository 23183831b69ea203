"""POST /api/client/metrics/custom: validation, latest-value series, expiry, the series limit."""

from __future__ import annotations

import json
import sqlite3

from proxy.api.state import STORE
from tests.scrape_support import samples
from tests.support import FRONTEND_TOKEN, PAYLOADS, client_headers

PATH = "/api/client/metrics/custom"


async def post_custom(client, metrics: list[dict], token: str | None = None):
    headers = client_headers(token) if token else client_headers()
    return await client.post(PATH, json={"metrics": metrics}, headers=headers)


async def exposed(client, name: str) -> dict[str, float]:
    return samples(await (await client.get("/internal-backstage/prometheus")).text(), name)


async def test_recorded_curl_body_is_exposed_like_unleash(client):
    body = json.loads((PAYLOADS / "curl" / "custom.json").read_text())
    resp = await client.post(PATH, json=body, headers=client_headers())
    assert resp.status == 202
    text = await (await client.get("/internal-backstage/prometheus")).text()
    # Unleash 7.5.1 answered this line for the same post (admin-responses/custom-metrics-prometheus.txt).
    unleash = (PAYLOADS / "admin-responses" / "custom-metrics-prometheus.txt").read_text().splitlines()[2]
    assert unleash in text.splitlines()


async def test_latest_value_wins_not_the_sum(client):
    labels = {"appName": "web", "env": "development"}
    assert (await post_custom(client, [{"name": "jobs_done", "value": 3, "labels": labels}])).status == 202
    assert (await post_custom(client, [{"name": "jobs_done", "value": 2, "labels": labels}])).status == 202
    assert await exposed(client, "jobs_done") == {'{appName="web",env="development"}': 2}


async def test_label_sets_are_separate_series_whatever_the_key_order(client):
    await post_custom(client, [
        {"name": "queue_depth", "value": 1, "labels": {"a": "1", "b": "2"}},
        {"name": "queue_depth", "value": 5, "labels": {"a": "other"}},
        {"name": "queue_depth", "value": 9},
    ])
    await post_custom(client, [{"name": "queue_depth", "value": 4, "labels": {"b": "2", "a": "1"}}])
    assert await exposed(client, "queue_depth") == {'{a="1",b="2"}': 4, '{a="other"}': 5, "": 9}


async def test_names_are_sanitised_as_unleash_does(client):
    resp = await post_custom(client, [{"name": "http.requests-in", "value": 1, "labels": {"status-code": "200"}}])
    assert resp.status == 202
    assert await exposed(client, "http_requests_in") == {'{status_code="200"}': 1}


async def test_series_survive_a_restart(make_client):
    first = await make_client()
    assert (await post_custom(first, [{"name": "uptime_seconds", "value": 42.5}])).status == 202
    await first.close()
    second = await make_client()
    assert await exposed(second, "uptime_seconds") == {"": 42.5}


async def test_series_expire_after_the_ttl(make_client, clock):
    client = await make_client(custom_metrics_ttl=600)
    await post_custom(client, [{"name": "stale_one", "value": 1}])
    clock.advance(300)
    await post_custom(client, [{"name": "fresh_one", "value": 1}])
    clock.advance(301)
    assert await exposed(client, "stale_one") == {}
    assert await exposed(client, "fresh_one") == {"": 1}


async def assert_bad(resp, path: str) -> None:
    assert resp.status == 400
    body = await resp.json()
    assert body["name"] == "BadDataError"
    assert body["details"][0]["path"] == path, body


async def test_bad_entries_are_named(client):
    await assert_bad(await post_custom(client, [{"name": "ok", "value": 1}, {"value": 1}]), "metrics[1].name")
    await assert_bad(await post_custom(client, [{"name": "no_value"}]), "metrics[0].value")
    await assert_bad(await post_custom(client, [{"name": "text_value", "value": "3"}]), "metrics[0].value")
    await assert_bad(await post_custom(client, [{"name": "n", "value": 1, "labels": {"x": 5}}]),
                     "metrics[0].labels['x']")
    await assert_bad(await post_custom(client, [{"name": "n", "value": 1}, {"name": "9lives", "value": 1}]),
                     "metrics[1].name")
    await assert_bad(await post_custom(client, [{"name": "metrics_proxy_fake", "value": 1}]), "metrics[0].name")
    await assert_bad(await post_custom(client, [{"name": "n", "value": 1, "labels": {"__name__": "x"}}]),
                     "metrics[0].labels['__name__']")
    # Nothing of a refused post is stored, not even its valid entries.
    assert await exposed(client, "ok") == {}
    assert await exposed(client, "n") == {}


async def test_needs_a_client_token(client):
    assert (await client.post(PATH, json={"metrics": []})).status == 401
    assert (await post_custom(client, [{"name": "x", "value": 1}], token=FRONTEND_TOKEN)).status == 403


async def test_new_series_beyond_the_limit_are_refused_and_counted(make_client):
    client = await make_client(custom_metrics_max_series=2)
    assert (await post_custom(client, [{"name": "a", "value": 1}, {"name": "b", "value": 1}])).status == 202
    await assert_bad(await post_custom(client, [{"name": "a", "value": 2}, {"name": "c", "value": 1}]), "metrics[1]")
    # Existing series keep working.
    assert (await post_custom(client, [{"name": "a", "value": 3}])).status == 202
    assert await exposed(client, "a") == {"": 3}
    assert await exposed(client, "c") == {}
    assert await exposed(client, "metrics_proxy_dropped_rows_total") == {'{reason="custom_series_limit"}': 1}


async def test_expired_series_free_room_under_the_limit(make_client, clock):
    client = await make_client(custom_metrics_max_series=1, custom_metrics_ttl=60)
    assert (await post_custom(client, [{"name": "old", "value": 1}])).status == 202
    assert (await post_custom(client, [{"name": "new", "value": 1}])).status == 400
    clock.advance(61)
    assert (await post_custom(client, [{"name": "new", "value": 1}])).status == 202


async def test_pending_for_the_forwarder_only_with_an_upstream(make_client):
    standalone = await make_client()
    await post_custom(standalone, [{"name": "x", "value": 1}])
    path = standalone.server.app[STORE].path
    await standalone.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM pending_custom_metrics").fetchone()[0] == 0

    forwarding = await make_client(upstream={"url": "http://127.0.0.1:9/api"})
    await post_custom(forwarding, [{"name": "x", "value": 1, "labels": {"k": "v"}}])
    await post_custom(forwarding, [{"name": "x", "value": 4, "labels": {"k": "v"}}])
    assert await exposed(forwarding, "metrics_proxy_outbox_pending_custom_series") == {"": 1}
    await forwarding.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, labels, value FROM pending_custom_metrics").fetchall()
    assert rows == [("x", '{"k":"v"}', 4.0)]
