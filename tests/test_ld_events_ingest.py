"""SDK event posts and metric imports in: each path with its credential, every bad body, gzip, 413,
a repeated Payload-ID, CORS, and the summary counts in the usage store (never Unleash's pending)."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from proxy.api.state import STORE
from proxy.launchdarkly.model.payload import VENDOR
from proxy.launchdarkly.state import LD_EVENTS
from proxy.storage import payloads
from tests.ld_events_support import (
    CLIENT_SIDE_ID,
    MOBILE_KEY,
    SDK_KEY,
    STAGING_SDK_KEY,
    custom,
    index,
    ld_settings,
    sdk_headers,
    summary,
)
from tests.ld_support import LD_TOKEN
from tests.storage_support import SMALL_STORE
from tests.support import ADMIN_TOKEN


@pytest.fixture
async def proxy(make_client):
    return await make_client(launchdarkly=ld_settings())


def stored(client) -> list[tuple[str, dict, list]]:
    """(stream, meta, body) of every payload folded into the store and not cut yet."""
    store = client.server.app[STORE]
    store.fold()
    return [(stream, json.loads(meta), json.loads(body))
            for _, stream, meta, body in store.on_writer(payloads.oldest, VENDOR, 1000)]


def now_ms(clock) -> int:
    return int(clock.now() * 1000)


SERVER_PATHS = {"/bulk": "/bulk", "/diagnostic": "/diagnostic"}
MOBILE_PATHS = {"/mobile": "/mobile", "/mobile/events": "/mobile", "/mobile/events/bulk": "/mobile",
                "/mobile/events/diagnostic": "/mobile/events/diagnostic"}


@pytest.mark.parametrize(("path", "key", "kind", "upstream"),
                         [(p, SDK_KEY, "server", u) for p, u in SERVER_PATHS.items()]
                         + [(p, MOBILE_KEY, "mobile", u) for p, u in MOBILE_PATHS.items()])
async def test_each_sdk_path_takes_its_credential_and_keeps_the_headers(proxy, clock, path, key, kind, upstream):
    diagnostic = path.endswith("diagnostic")
    body = {"kind": "diagnostic", "id": {"diagnosticId": "d1"}} if diagnostic else [index(now_ms(clock))]
    headers = sdk_headers(key, payload_id="p-1", **{"X-LaunchDarkly-Tags": "application-id/shop"})
    response = await proxy.post(path, json=body, headers=headers)
    assert response.status == 202, await response.text()
    [(stream, meta, kept)] = stored(proxy)
    assert stream == f"production:{kind}"
    assert kept == body
    assert meta["path"] == upstream and meta["schema"] == "4" and meta["tags"] == "application-id/shop"
    assert meta["user_agent"] == "PythonClient/9.20.0" and meta["payload_id"] == "p-1"
    assert meta.get("diagnostic", False) is diagnostic
    assert "key" not in meta  # tokens mode: the key comes from the config when sent


@pytest.mark.parametrize("path", ["/events/bulk/{id}", "/events/diagnostic/{id}"])
async def test_browser_paths_take_the_client_side_id_and_answer_cors(proxy, clock, path):
    url = path.format(id=CLIENT_SIDE_ID)
    body = [index(now_ms(clock))] if "bulk" in path else {"kind": "diagnostic"}
    origin = {"Origin": "https://shop.example"}
    response = await proxy.options(url, headers={**origin, "Access-Control-Request-Method": "POST"})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "X-LaunchDarkly-Payload-ID" in response.headers["Access-Control-Allow-Headers"]
    response = await proxy.post(url, json=body, headers=origin)
    assert response.status == 202
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    [(stream, meta, kept)] = stored(proxy)
    assert stream == "production:browser" and meta["path"] == url and kept == body
    refused = await proxy.post(path.format(id="5f-unknown"), json=body, headers=origin)
    assert refused.status == 403 and "message" in await refused.json()
    assert refused.headers["Access-Control-Allow-Origin"] == "https://shop.example"


@pytest.mark.parametrize(("path", "key"), [("/bulk", SDK_KEY), ("/mobile", MOBILE_KEY)])
async def test_a_missing_key_is_401_and_an_unknown_or_other_kind_403_in_relays_shape(proxy, path, key):
    missing = await proxy.post(path, json=[], headers={"Content-Type": "application/json"})
    assert missing.status == 401
    body = await missing.json()
    assert set(body) == {"message"} and body["message"]
    unknown = await proxy.post(path, json=[], headers=sdk_headers("sdk-not-configured"))
    assert unknown.status == 403 and set(await unknown.json()) == {"message"}
    other = MOBILE_KEY if key == SDK_KEY else SDK_KEY  # an SDK key on the mobile path and the reverse
    crossed = await proxy.post(path, json=[], headers=sdk_headers(other))
    assert crossed.status == 403


async def test_open_auth_files_any_key_under_a_masked_environment_and_keeps_it_to_send(make_client, clock):
    proxy = await make_client(auth="open", launchdarkly=ld_settings())
    key = "sdk-99999999-1111-4222-8333-944455556666"
    response = await proxy.post("/bulk", json=[index(now_ms(clock))], headers=sdk_headers(key))
    assert response.status == 202
    [(stream, meta, _)] = stored(proxy)
    assert key not in stream and stream.startswith("sdk-") and stream.endswith(":server")
    assert meta["key"] == key  # what the events go upstream with
    configured = await proxy.post("/bulk", json=[index(now_ms(clock))], headers=sdk_headers(SDK_KEY))
    assert configured.status == 202
    assert stored(proxy)[-1][0] == "production:server"


BAD_BODIES = [
    (b"", "body may not be empty"),
    (b"   ", "body may not be empty"),
    (b"[{", "not JSON"),
    (b'{"kind": "index"}', "JSON array"),
    (b'[{"kind": "index"}, {"creationDate": 1}]', "event 1"),
    (b'[{"kind": "index"}, {"kind": "index"}, 7]', "event 2"),
    (b'[{"kind": 5}]', "event 0"),
    (b'[{"kind": "summary", "features": {"f": {"counters": [{"count": -1}]}}}]', "event 0"),
    (b'[{"kind": "index"}, {"kind": "custom"}]', "event 1"),
]


@pytest.mark.parametrize(("raw", "said"), BAD_BODIES, ids=[s for _, s in BAD_BODIES])
async def test_a_bad_body_is_a_400_naming_the_event_and_nothing_is_stored(proxy, raw, said):
    response = await proxy.post("/bulk", data=raw, headers=sdk_headers())
    assert response.status == 400
    body = await response.json()
    assert set(body) == {"message"} and said in body["message"], body
    assert stored(proxy) == []


async def test_unknown_kinds_are_kept_unchanged(proxy):
    events = [{"kind": "migration_op", "operation": "read", "measurements": [{"key": "latency", "values": {}}]},
              {"kind": "something-new", "key": 5, "nested": {"a": [1, 2]}}]
    assert (await proxy.post("/bulk", json=events, headers=sdk_headers())).status == 202
    assert stored(proxy)[0][2] == events


async def test_gzip_bodies_are_accepted_and_a_body_over_the_limit_is_413(make_client, clock):
    proxy = await make_client(launchdarkly=ld_settings(), max_body_size=4096)
    events = [index(now_ms(clock), user=f"u{n}") for n in range(5)]
    raw = gzip.compress(json.dumps(events).encode())
    response = await proxy.post("/bulk", data=raw, headers=sdk_headers(**{"Content-Encoding": "gzip"}))
    assert response.status == 202
    assert stored(proxy)[0][2] == events
    big = [index(now_ms(clock), user="u" * 100) for _ in range(100)]
    too_large = await proxy.post("/bulk", data=gzip.compress(json.dumps(big).encode()),
                                 headers=sdk_headers(**{"Content-Encoding": "gzip"}))
    assert too_large.status == 413 and set(await too_large.json()) == {"message"}
    assert len(stored(proxy)) == 1


async def test_a_repeated_payload_id_of_one_credential_is_answered_202_and_stored_once(proxy, clock):
    body = [index(now_ms(clock))]
    for _ in range(3):
        assert (await proxy.post("/bulk", json=body, headers=sdk_headers(payload_id="same"))).status == 202
    # Another credential's payload with the same id is another payload.
    assert (await proxy.post("/bulk", json=body, headers=sdk_headers(STAGING_SDK_KEY, payload_id="same"))).status == 202
    assert [stream for stream, _, _ in stored(proxy)] == ["production:server", "staging:server"]
    # After payload_id_window the id is forgotten (pruned by the cut) and a post with it is new.
    clock.advance(901)
    await proxy.server.app[LD_EVENTS].catch_up()
    assert (await proxy.post("/bulk", json=body, headers=sdk_headers(payload_id="same"))).status == 202
    assert [stream for stream, _, _ in stored(proxy)] == ["production:server"]
    store = proxy.server.app[STORE]
    assert store.db.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 1


async def test_metric_imports_need_an_access_token_and_custom_events(proxy, clock):
    path = "/v2/event-data-import/proj/production"
    events = [custom("checkout", now_ms(clock), 12.5)]
    assert (await proxy.post(path, json=events)).status == 401
    assert (await proxy.post(path, json=events, headers={"Authorization": SDK_KEY})).status == 401
    bad = await proxy.post(path, json=[*events, {"kind": "index", "key": "k", "creationDate": 1}],
                           headers={"Authorization": LD_TOKEN})
    assert bad.status == 400 and "event 1" in (await bad.json())["message"]
    response = await proxy.post(path, json=events, headers={"Authorization": LD_TOKEN, "X-LaunchDarkly-Event-Schema": "4"})
    assert response.status == 202
    [(stream, meta, kept)] = stored(proxy)
    assert stream == "production:import" and meta["path"] == path and kept == events


async def test_summary_counts_reach_the_usage_store_under_the_launchdarkly_app(proxy, clock):
    end = now_ms(clock)
    events = [summary({
        "bool-flag": [{"value": True, "variation": 0, "version": 3, "count": 7},
                      {"value": False, "variation": 1, "version": 3, "count": 2}],
        "color": [{"value": "red", "variation": 0, "version": 1, "count": 4},
                  {"value": {"rgb": [1, 2]}, "variation": 2, "version": 1, "count": 1},
                  {"value": 12, "variation": 3, "version": 1, "count": 2}],
        "missing": [{"value": False, "unknown": True, "count": 5}],
    }, end), index(end)]
    assert (await proxy.post("/bulk", json=events, headers=sdk_headers())).status == 202
    usage = await (await proxy.get("/api/client/metrics/feature-toggles",
                                   headers={"Authorization": ADMIN_TOKEN})).json()
    assert usage["lastHour"] == {"bool-flag": {"yes": 7, "no": 2}, "color": {"yes": 7, "no": 0},
                                 "missing": {"yes": 0, "no": 5}}
    raw = await (await proxy.get("/api/admin/client-metrics/features/color/raw?hoursBack=1",
                                 headers={"Authorization": ADMIN_TOKEN})).json()
    rows = [r for r in raw["data"] if r["appName"] == "launchdarkly:production" and (r["yes"] or r["no"])]
    assert [(r["yes"], r["no"], r["variants"]) for r in rows] == [
        (7, 0, {"red": 4, "variation-2": 1, "12": 2})]
    for flag, yes, no in (("bool-flag", 7, 2), ("missing", 0, 5)):
        raw = await (await proxy.get(f"/api/admin/client-metrics/features/{flag}/raw?hoursBack=1",
                                     headers={"Authorization": ADMIN_TOKEN})).json()
        assert [(r["yes"], r["no"]) for r in raw["data"] if r["yes"] or r["no"]] == [(yes, no)]
    store = proxy.server.app[STORE]
    assert store.db.execute("SELECT count(*) FROM hourly_counts").fetchone()[0] == 3
    assert store.db.execute("SELECT count(*) FROM pending_counts").fetchone()[0] == 0  # never Unleash's


async def test_a_full_store_refuses_event_posts_with_503_and_keeps_what_it_acknowledged(make_client, clock):
    proxy = await make_client(launchdarkly=ld_settings(), max_db_size=SMALL_STORE)
    acknowledged, refused = [], 0
    for n in range(400):
        events = [index(now_ms(clock), user=f"{n}-{i}-" + os.urandom(16).hex()) for i in range(40)]
        response = await proxy.post("/bulk", json=events, headers=sdk_headers())
        if response.status == 202:
            acknowledged.append(events)
            continue
        assert response.status == 503 and "Retry-After" in response.headers
        assert set(await response.json()) == {"message"}
        refused += 1
        if refused > 3:
            break
    assert acknowledged and refused
    assert [kept for _, _, kept in stored(proxy)] == acknowledged  # every 202, nothing refused


async def test_under_drop_oldest_the_oldest_stored_events_give_way_and_are_counted(make_client, clock):
    proxy = await make_client(launchdarkly=ld_settings(), max_db_size=SMALL_STORE, overflow_policy="drop_oldest")
    posted = []
    for n in range(120):
        events = [index(now_ms(clock), user=f"{n}-{i}-" + os.urandom(16).hex()) for i in range(40)]
        response = await proxy.post("/bulk", json=events, headers=sdk_headers())
        assert response.status == 202, await response.text()  # never refused: the oldest give way
        posted.append(events)
    kept = [body for _, _, body in stored(proxy)]
    assert kept and len(kept) < len(posted)
    assert kept == posted[-len(kept):]  # the newest stay, in order
    scrape = await (await proxy.get("/internal-backstage/prometheus")).text()
    line = next(x for x in scrape.splitlines()
                if x.startswith('metrics_proxy_launchdarkly_events_dropped_total{reason="overflow_drop_oldest"}'))
    assert int(float(line.split()[-1])) == len(posted) - len(kept)
