"""Connections against a real `metrics-proxy serve` whose descriptors are few (issue 17).

The child's RLIMIT_NOFILE is lowered in preexec_fn, soft and hard alike: the proxy raises its soft
limit to the hard one at start, so only a low hard limit leaves it short of descriptors. Idle and
half-sent connections beyond that must not take it offline: health answers, posts get 202 or a
clean 503, and the log says what happened. See docs/connections.md.
"""

from __future__ import annotations

import json
import resource
import socket
import time
import urllib.error
import urllib.request

from tests.support import CLIENT_TOKEN, ProxyProcess, epoch_ms

NOFILE = 256  # descriptors the proxy process may hold (soft = hard)
# A request whose headers never finish: the slowloris shape, and what a stalled client leaves.
HALF_REQUEST = b"POST /api/client/metrics HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"


def descriptors(limit: int, hard: int | None = None):
    """preexec_fn: the child starts with `limit` descriptors (soft), `hard` at most (default: the same)."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard or limit))

    return lower


def half_requests(port: int, count: int) -> list[socket.socket]:
    """`count` connections that each send part of a request's headers and then nothing."""
    held = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            continue
        try:
            sock.sendall(HALF_REQUEST)
        except OSError:
            pass  # closed already: it still took an accept
        held.append(sock)
    return held


def health(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/internal-backstage/health", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None  # no answer: refused, reset, or timed out


def post(url: str, yes: int) -> int | None:
    """The status of one usage post on a new connection, None if no HTTP answer came."""
    now = time.time()
    body = {"appName": "app", "instanceId": "i-1",
            "bucket": {"start": epoch_ms(now - 1), "stop": epoch_ms(now), "toggles": {"flag": {"yes": yes, "no": 0}}}}
    request = urllib.request.Request(
        url + "/api/client/metrics", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": CLIENT_TOKEN, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def test_more_idle_connections_than_descriptors_leave_health_and_posts_answering(tmp_path):
    proxy = ProxyProcess(tmp_path / "data", preexec_fn=descriptors(NOFILE)).start()
    held: list[socket.socket] = []
    try:
        held += half_requests(proxy.port, 2 * NOFILE)
        checks, posts = [], []
        for round_ in range(6):
            held += half_requests(proxy.port, NOFILE // 4)  # the flood goes on between checks
            checks.append(health(proxy.url))
            posts.append(post(proxy.url, round_ + 1))
        assert checks == [200] * len(checks), proxy.log()[-3000:]
        assert set(posts) <= {202, 503} and 202 in posts, (posts, proxy.log()[-3000:])
        log = proxy.log()
        assert f"RLIMIT_NOFILE soft {NOFILE}, hard {NOFILE}" in log
        assert "connection limit" in log
    finally:
        close_all(held)
        proxy.stop()
