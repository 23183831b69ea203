"""Inbound limits on a real proxy process: oversized, chunked and gzip-bomb bodies get 413 and the
process's memory stays bounded (reliability requirement 10, tests/reliability/README.md)."""

from __future__ import annotations

import gzip
import http.client
import json
import time
import zlib

import pytest

from tests.support import CLIENT_TOKEN, ProxyProcess

LIMIT = 1024 * 1024
RSS_CEILING_KB = 150 * 1024


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):  # peak resident set size
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def post(port: int, body, headers: dict[str, str]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/api/client/metrics", body=body,
                     headers={"Authorization": CLIENT_TOKEN, "Content-Type": "application/json", **headers},
                     encode_chunked=not isinstance(body, bytes))
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def gzip_bomb(expanded: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    chunk = b" " * (1024 * 1024)
    out = [compressor.compress(b'{"appName":"bomb","pad":"')]
    for _ in range(expanded // len(chunk)):
        out.append(compressor.compress(chunk))
    out.append(compressor.compress(b'"}'))
    out.append(compressor.flush())
    return b"".join(out)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    proc = ProxyProcess(tmp_path_factory.mktemp("limits") / "data").start()
    yield proc
    proc.stop()


def test_one_byte_over_the_limit_is_413(proxy):
    body = b'{"appName":"a","pad":"' + b"x" * (LIMIT - 23) + b'"}'
    assert len(body) == LIMIT + 1
    status, error = post(proxy.port, body, {})
    assert status == 413 and error["name"] == "ContentTooLargeError"
    status, _ = post(proxy.port, body[: LIMIT - 3] + b'"}', {})
    assert status == 202  # exactly at the limit it is read and accepted


def test_chunked_body_without_length_is_cut_at_the_limit(proxy):
    def chunks():
        yield b'{"appName":"a","pad":"'
        for _ in range(2 * LIMIT // 65536):
            yield b"x" * 65536
        yield b'"}'

    status, error = post(proxy.port, chunks(), {"Transfer-Encoding": "chunked"})
    assert status == 413 and error["name"] == "ContentTooLargeError"


def test_gzip_bomb_is_413_and_memory_stays_bounded(proxy):
    bomb = gzip_bomb(200 * 1024 * 1024)
    assert len(bomb) < 300 * 1024
    for _ in range(3):
        status, error = post(proxy.port, bomb, {"Content-Encoding": "gzip"})
        assert status == 413 and "after decompression" in error["message"]
    assert rss_kb(proxy.proc.pid) < RSS_CEILING_KB
    # The proxy still serves.
    now_ms = int(time.time() * 1000)
    ok = {"appName": "a", "bucket": {"start": now_ms - 1000, "stop": now_ms, "toggles": {"f": {"yes": 1}}}}
    assert post(proxy.port, gzip.compress(json.dumps(ok).encode()), {"Content-Encoding": "gzip"})[0] == 202
