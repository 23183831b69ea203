"""The bodies that broke the reader (issue 17), sent to LaunchDarkly's write endpoints and its SDK
event endpoints: they share Unleash's body reader, so deep nesting, a corrupt or mislabelled
compressed body and a decompression bomb get a 4xx in the vendor's error body (the REST API's
{code, message, id}, Relay's {message}), never a 500, and nothing is written."""

from __future__ import annotations

import gzip
import json
import logging
import zlib

import pytest

from proxy.api.state import STORE
from tests.ld_events_support import CLIENT_SIDE_ID, MOBILE_KEY, SDK_KEY, custom, ld_settings, sdk_headers
from tests.ld_support import BETA, LD_SETTINGS, LD_TOKEN, custom_metric, error_of, group_body

DEPTH = 10_000
DEEP_OBJECT = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH
DEEP_ARRAY = b"[" * DEPTH + b"]" * DEPTH


def _with(accepted: dict, field: str, raw: bytes) -> bytes:
    return json.dumps(accepted).encode()[:-1] + b',"' + field.encode() + b'":' + raw + b"}"


@pytest.fixture
async def ld_client(make_client):
    client = await make_client(launchdarkly=LD_SETTINGS)
    assert (await client.post("/api/v2/metrics/p", json=custom_metric("used"), headers=BETA)).status == 201
    return client


@pytest.fixture
def errors_logged(caplog):
    caplog.set_level(logging.ERROR)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# (path, a body it accepts)
WRITES = [
    ("/api/v2/metrics/p", custom_metric("m1")),
    ("/api/v2/projects/p/metric-groups", group_body("g1", ["used"])),
]
IDS = ["metrics", "metric-groups"]


async def _post(client, path: str, data: bytes, **headers: str):
    return await client.post(path, data=data, headers={**BETA, "Content-Type": "application/json", **headers})


async def _listed(client, path: str) -> int:
    return (await (await client.get(path, headers=BETA)).json())["totalCount"]


@pytest.mark.parametrize("path, accepted", WRITES, ids=IDS)
async def test_json_nested_ten_thousand_deep_is_a_400_in_launchdarklys_body(ld_client, errors_logged, path, accepted):
    before = await _listed(ld_client, path)
    for data in (DEEP_OBJECT, _with(accepted, "extra", DEEP_ARRAY), _with(accepted, "extra", DEEP_OBJECT)):
        await error_of(await _post(ld_client, path, data), 400, "invalid_request")
    assert await _listed(ld_client, path) == before
    assert errors_logged() == []


@pytest.mark.parametrize("path, accepted", WRITES, ids=IDS)
async def test_a_body_that_does_not_decode_as_declared_is_a_400(ld_client, errors_logged, path, accepted):
    plain = json.dumps(accepted).encode()
    corrupt = bytearray(gzip.compress(plain))
    corrupt[len(corrupt) // 2] ^= 0xFF
    for data, encoding in ((plain, "gzip"), (bytes(corrupt), "gzip"), (plain, "deflate"), (corrupt[:20], "gzip")):
        await error_of(await _post(ld_client, path, data, **{"Content-Encoding": encoding}), 400, "invalid_request")
    assert (await _post(ld_client, path, gzip.compress(plain), **{"Content-Encoding": "gzip"})).status == 201
    assert errors_logged() == []


@pytest.mark.parametrize("path, accepted", WRITES, ids=IDS)
@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_a_decompression_bomb_is_a_413_and_the_next_write_is_taken(make_client, errors_logged, path, accepted,
                                                                          encoding, compress):
    client = await make_client(launchdarkly=LD_SETTINGS, max_body_size=64 * 1024)
    assert (await client.post("/api/v2/metrics/p", json=custom_metric("used"), headers=BETA)).status == 201
    bomb = compress(_with(accepted, "pad", b'"' + b" " * (16 * 1024 * 1024) + b'"'))
    assert len(bomb) < 64 * 1024
    resp = await _post(client, path, bomb, **{"Content-Encoding": encoding})
    assert resp.status == 413
    body = await resp.json()
    assert set(body) == {"code", "message", "id"} and str(64 * 1024) in body["message"], body
    assert (await _post(client, path, compress(json.dumps(accepted).encode()),
                        **{"Content-Encoding": encoding})).status == 201
    assert errors_logged() == []


# --- the SDK event endpoints: Relay's paths and its {"message"} body -------------------------

EVENT_POSTS = [
    ("/bulk", SDK_KEY),
    ("/mobile/events/bulk", MOBILE_KEY),
    (f"/events/bulk/{CLIENT_SIDE_ID}", None),
    ("/v2/event-data-import/proj/production", LD_TOKEN),
]
EVENT_IDS = ["server", "mobile", "browser", "import"]


def _event_headers(key: str | None, **extra: str) -> dict[str, str]:
    headers = sdk_headers(key or SDK_KEY, **extra)
    if key is None:
        del headers["Authorization"]  # the browser path names its environment in the path
    return headers


async def _stored_payloads(client) -> int:
    return client.server.app[STORE].db.execute("SELECT count(*) FROM inbound_payloads").fetchone()[0]


@pytest.fixture
async def events_client(make_client):
    return await make_client(launchdarkly=ld_settings(), max_body_size=64 * 1024)


@pytest.mark.parametrize("path, key", EVENT_POSTS, ids=EVENT_IDS)
async def test_sdk_event_posts_refuse_hostile_bodies_in_relays_body(events_client, errors_logged, path, key):
    accepted = json.dumps([custom("checkout", 1_000)]).encode()
    corrupt = bytearray(gzip.compress(accepted))
    corrupt[len(corrupt) // 2] ^= 0xFF
    bomb = gzip.compress(b'[{"kind":"custom","key":"k","creationDate":1,"pad":"' + b" " * (16 * 1024 * 1024) + b'"}]')
    cases = [(DEEP_ARRAY, {}, 400), (b"[" + DEEP_OBJECT + b"]", {}, 400),
             (accepted, {"Content-Encoding": "gzip"}, 400), (bytes(corrupt), {"Content-Encoding": "gzip"}, 400),
             (bomb, {"Content-Encoding": "gzip"}, 413)]
    for data, extra, status in cases:
        resp = await events_client.post(path, data=data, headers=_event_headers(key, **extra))
        body = await resp.json()
        assert resp.status == status and set(body) == {"message"} and body["message"], (path, status, body)
    assert await _stored_payloads(events_client) == 0  # nothing of them was kept
    resp = await events_client.post(path, data=gzip.compress(accepted),
                                    headers=_event_headers(key, **{"Content-Encoding": "gzip"}))
    assert resp.status == 202, await resp.text()
    assert await _stored_payloads(events_client) == 1
    assert errors_logged() == []
