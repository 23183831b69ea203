"""Bodies built to break the reader (issue 17, part A): deeply nested JSON, a corrupt or mislabelled
compressed body, a decompression bomb. Every POST endpoint answers each with a 4xx in the
documented error body, never aiohttp's text 500, and logs no unhandled exception."""

from __future__ import annotations

import gzip
import logging
import sys
import zlib

import pytest

from tests.support import CLIENT_TOKEN, FRONTEND_TOKEN

# (path, token, a small body it accepts)
ENDPOINTS = [
    ("/api/client/metrics", CLIENT_TOKEN, b'{"appName":"app"}'),
    ("/api/client/register", CLIENT_TOKEN,
     b'{"appName":"app","interval":1000,"started":0,"strategies":["default"]}'),
    ("/api/client/metrics/bulk", CLIENT_TOKEN, b'{"applications":[],"metrics":[]}'),
    ("/api/frontend/client/metrics", FRONTEND_TOKEN, b'{"appName":"app"}'),
    ("/api/frontend/client/register", FRONTEND_TOKEN, b'{"appName":"app"}'),
    ("/api/client/metrics/custom", CLIENT_TOKEN, b'{"metrics":[]}'),
]
IDS = [path for path, *_ in ENDPOINTS]

DEPTH = 10_000
DEEP_ARRAY = b"[" * DEPTH + b"]" * DEPTH
DEEP_OBJECT = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH  # ~50 KB


def _inside(accepted: bytes, field: bytes, value: bytes) -> bytes:
    """`accepted` with one more field holding `value`."""
    return accepted[:-1] + b',"' + field + b'":' + value + b"}"


def _assert_error_body(error: dict, name: str) -> None:
    assert set(error) == {"id", "name", "message", "details"}, error
    assert error["name"] == name, error
    assert error["details"] and isinstance(error["details"][0]["message"], str), error


async def _post(client, path: str, token: str, data: bytes, **headers: str):
    return await client.post(path, data=data, headers={"Authorization": token, "Content-Type": "application/json",
                                                        **headers})


@pytest.fixture
def errors_logged(caplog):
    """Records at ERROR or above: an exception a handler let escape is logged there by aiohttp."""
    caplog.set_level(logging.ERROR)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _deep_bodies(accepted: bytes, path: str) -> list[bytes]:
    # (a deep array as the whole body is refused at its first byte: not an object)
    bodies = [DEEP_OBJECT, _inside(accepted, b"extra", DEEP_ARRAY), _inside(accepted, b"extra", DEEP_OBJECT)]
    if path in ("/api/client/metrics", "/api/frontend/client/metrics", "/api/client/metrics/bulk"):
        # impactMetrics is kept raw and decoded entry by entry later: nested deep, in and as an entry
        bodies += [_inside(accepted, b"impactMetrics", DEEP_ARRAY),
                   _inside(accepted, b"impactMetrics", b"[" + DEEP_OBJECT + b"]")]
    return bodies


@pytest.mark.parametrize("path, token, accepted", ENDPOINTS, ids=IDS)
async def test_json_nested_ten_thousand_deep_is_a_400(client, errors_logged, path, token, accepted):
    for body in _deep_bodies(accepted, path):
        resp = await _post(client, path, token, body)
        assert resp.status == 400, (body[:40], resp.status, await resp.text())
        assert resp.content_type == "application/json"
        error = await resp.json()
        _assert_error_body(error, "BadDataError")
        assert "nested" in error["details"][0]["message"], error
    assert (await _post(client, path, token, accepted)).status == 202
    assert errors_logged() == []


CORRUPT_GZIP = gzip.compress(b'{"appName":"app"}')[:10] + b"\x00not deflate data at all" * 4
# (case, Content-Encoding, body)
BAD_ENCODINGS = [
    ("corrupt gzip", "gzip", CORRUPT_GZIP),
    ("plain body declared gzip", "gzip", None),  # the endpoint's accepted body, uncompressed
    ("plain body declared deflate", "deflate", None),
    ("corrupt deflate", "deflate", zlib.compress(b'{"appName":"app"}')[:2] + b"\xff" * 40),
    ("gzip body declared deflate", "deflate", gzip.compress(b'{"appName":"app"}')),
    # found by tests/test_ingest_property.py: a deflate stream that never ends failed inside aiohttp's
    # parser, which answered its own text 400 and logged the traceback as an error
    ("unfinished deflate", "deflate", b"\x00"),
    ("deflate cut short", "deflate", zlib.compress(b'{"appName":"app"}')[:-6]),
    # aiohttp accepted a gzip stream without its end (no length or CRC check)
    ("gzip cut short", "gzip", gzip.compress(b'{"appName":"app"}')[:-6]),
    ("gzip with trailing garbage", "gzip", gzip.compress(b'{"appName":"app"}') + b"garbage"),
]


@pytest.mark.parametrize("path, token, accepted", ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("case, encoding, data", BAD_ENCODINGS, ids=[c[0] for c in BAD_ENCODINGS])
async def test_a_body_that_does_not_decode_as_declared_is_a_400(client, errors_logged, path, token, accepted,
                                                                case, encoding, data):
    resp = await _post(client, path, token, accepted if data is None else data, **{"Content-Encoding": encoding})
    assert resp.status == 400, (resp.status, await resp.text())
    assert resp.content_type == "application/json"
    error = await resp.json()
    _assert_error_body(error, "BadDataError")
    assert error["details"][0]["path"] == "Content-Encoding", error
    assert encoding in error["details"][0]["message"], error
    # the next request (a new connection if the server closed this one) is served as usual
    assert (await _post(client, path, token, gzip.compress(accepted), **{"Content-Encoding": "gzip"})).status == 202
    assert errors_logged() == []


@pytest.mark.parametrize("path, token, accepted", ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-unknown"])
async def test_an_encoding_the_proxy_cannot_decode_is_a_415_saying_which_it_can(client, errors_logged, path, token,
                                                                              accepted, encoding):
    """aiohttp answered br and zstd with its own text 400 from inside its parser, and passed a
    body in an encoding it did not know to the handler as if it were plain."""
    resp = await _post(client, path, token, accepted, **{"Content-Encoding": encoding})
    assert resp.status == 415, (resp.status, await resp.text())
    assert resp.content_type == "application/json"
    error = await resp.json()
    _assert_error_body(error, "ContentEncodingError")
    assert error["details"][0]["path"] == "Content-Encoding"
    assert resp.headers["Accept-Encoding"] == "gzip, deflate"
    assert errors_logged() == []


def _raw_deflate_opening_like_zlib(body: bytes) -> bytes:
    """Raw deflate whose first two bytes also pass for a zlib header: a stored block (first byte
    0x08) whose length's low byte makes 0x08nn a multiple of 31; the body is padded with JSON
    whitespace to that length."""
    length = len(body) + (29 - len(body)) % 31
    assert length < 256 and (0x0800 + length) % 31 == 0
    padded = body + b" " * (length - len(body))
    stored = b"\x08" + length.to_bytes(2, "little") + (length ^ 0xFFFF).to_bytes(2, "little") + padded
    return stored + b"\x01\x00\x00\xff\xff"  # the final, empty stored block


@pytest.mark.parametrize("path, token, accepted", ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", "deflate", "identity", "gzip, identity"])
async def test_the_encodings_sdks_send_are_decoded(client, path, token, accepted, encoding):
    codings = [c.strip().lower() for c in encoding.split(",")]
    data = accepted
    for coding in codings:
        data = {"gzip": gzip.compress, "x-gzip": gzip.compress, "deflate": zlib.compress}.get(coding, bytes)(data)
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert (await _post(client, path, token, data, **{"Content-Encoding": encoding})).status == 202
    if encoding == "deflate":  # some clients send deflate without its zlib header
        data = raw_deflate.compress(accepted) + raw_deflate.flush()
        assert (await _post(client, path, token, data, **{"Content-Encoding": encoding})).status == 202
        data = _raw_deflate_opening_like_zlib(accepted)
        assert (await _post(client, path, token, data, **{"Content-Encoding": encoding})).status == 202
    if encoding == "gzip":  # several gzip members are one gzip body
        half = len(accepted) // 2
        data = gzip.compress(accepted[:half]) + gzip.compress(accepted[half:])
        assert (await _post(client, path, token, data, **{"Content-Encoding": encoding})).status == 202


async def test_a_bomb_spread_over_gzip_members_stops_at_the_limit_too(make_client):
    client = await make_client(max_body_size=64 * 1024)
    member = gzip.compress(b" " * (40 * 1024))  # each under the limit, together over it
    resp = await _post(client, "/api/client/metrics", CLIENT_TOKEN, gzip.compress(b'{"appName":"app"}') + member * 2,
                       **{"Content-Encoding": "gzip"})
    assert resp.status == 413
    assert str(64 * 1024) in (await resp.json())["message"]


@pytest.mark.parametrize("path, token, accepted", ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_a_decompression_bomb_stops_at_max_body_size_with_413(make_client, errors_logged, path, token, accepted,
                                                                    encoding, compress):
    client = await make_client(max_body_size=64 * 1024)
    bomb = compress(accepted[:-1] + b',"pad":"' + b" " * (16 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024  # the compressed body itself is under the limit
    resp = await _post(client, path, token, bomb, **{"Content-Encoding": encoding})
    assert resp.status == 413
    _assert_error_body(await resp.json(), "ContentTooLargeError")
    assert (await _post(client, path, token, compress(accepted), **{"Content-Encoding": encoding})).status == 202
    assert errors_logged() == []


async def test_impact_metrics_nested_near_the_recursion_limit_never_escape(client, errors_logged):
    """impactMetrics is decoded twice: skipped as raw JSON with the body, then entry by entry a few
    stack frames deeper. A depth that passes the first and not the second drops the entry."""
    limit = sys.getrecursionlimit()
    statuses = set()
    for depth in range(limit - 80, limit + 10):
        nested = b"[" * depth + b"]" * depth
        body = (b'{"appName":"app","impactMetrics":[{"name":"n","help":"h","type":"counter","samples":[],"extra":'
                + nested + b"}]}")
        resp = await _post(client, "/api/client/metrics", CLIENT_TOKEN, body)
        statuses.add(resp.status)
        assert resp.status in (202, 400), (depth, resp.status, await resp.text())
    assert statuses == {202, 400}  # the range spans the limit
    assert errors_logged() == []


async def test_with_an_ingest_worker_both_processes_decode_and_refuse_alike(tmp_path):
    """workers = 2: the worker ingests metrics and register posts and passes bulk and custom posts
    to the primary with the body as it came, Content-Encoding included."""
    import aiohttp

    from tests.support import ProxyProcess, wait_for_log

    proxy = ProxyProcess(tmp_path / "data", extra_env={"METRICS_PROXY_WORKERS": "2"}).start()
    try:
        wait_for_log(proxy, "worker 1 listening")
        for _ in range(8):  # separate connections land on both processes
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                for path, token, accepted in ENDPOINTS:
                    headers = {"Authorization": token, "Content-Type": "application/json", "Content-Encoding": "gzip"}
                    async with session.post(proxy.url + path, data=gzip.compress(accepted), headers=headers) as resp:
                        assert resp.status == 202, (path, await resp.text())
                    async with session.post(proxy.url + path, data=CORRUPT_GZIP, headers=headers) as resp:
                        assert resp.status == 400, (path, await resp.text())
                        assert (await resp.json())["details"][0]["path"] == "Content-Encoding"
    finally:
        proxy.stop()
    assert "Traceback" not in proxy.log()
