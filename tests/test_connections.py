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

import pytest

from tests.scrape_support import samples
from tests.support import CLIENT_TOKEN, ProxyProcess, epoch_ms, stored_yes_last_hour, wait_for_log

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


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/internal-backstage/prometheus", timeout=5) as answer:
        return answer.read().decode()


def closed_by_proxy(sock: socket.socket, within: float) -> bool:
    """Whether the proxy closes `sock` within `within` seconds (EOF or reset), reading what comes."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def flood_checks(proxy: ProxyProcess, rounds: int = 6) -> tuple[list, list, list[socket.socket]]:
    """Twice NOFILE half-sent requests, then rounds of more of them, each followed by a health
    check and a post on new connections: (health statuses, post statuses, the sockets held)."""
    held = half_requests(proxy.port, 2 * NOFILE)
    checks, posts = [], []
    for round_ in range(rounds):
        held += half_requests(proxy.port, NOFILE // 4)  # the flood goes on between checks
        checks.append(health(proxy.url))
        posts.append(post(proxy.url, round_ + 1))
    return checks, posts, held


def yes_acknowledged(posts: list[int | None]) -> int:
    return sum(round_ + 1 for round_, status in enumerate(posts) if status == 202)


def flood_and_check(proxy: ProxyProcess) -> tuple[list[int], list[socket.socket]]:
    """Flood the proxy with idle connections: every health check must answer 200, every post 202
    or a clean 503. Returns the post statuses and the connections still held."""
    checks, posts, held = flood_checks(proxy)
    assert checks == [200] * len(checks), proxy.log()[-3000:]
    assert set(posts) <= {202, 503} and 202 in posts, (posts, proxy.log()[-3000:])
    return posts, held


def test_more_idle_connections_than_descriptors_leave_health_and_posts_answering(tmp_path):
    """max_connections from the limit: the flood meets the connection limit before the descriptor
    limit, and each new connection closes the oldest idle one to make room."""
    proxy = ProxyProcess(tmp_path / "data", preexec_fn=descriptors(NOFILE)).start()
    held: list[socket.socket] = []
    try:
        posts, held = flood_and_check(proxy)
        log = proxy.log()
        assert f"RLIMIT_NOFILE soft {NOFILE}, hard {NOFILE}" in log
        assert "connection limit" in log
        text = scrape(proxy.url)
        assert samples(text, "metrics_proxy_connections_closed_total")['{reason="evicted"}'] > 0
        assert 0 < samples(text, "metrics_proxy_max_connections")[""] < NOFILE
        assert samples(text, "metrics_proxy_open_connections")[""] <= samples(text, "metrics_proxy_max_connections")[""]
        assert samples(text, "metrics_proxy_open_files_limit")[""] == NOFILE
        close_all(held)
        assert stored_yes_last_hour_sync(proxy.url) == yes_acknowledged(posts)  # every 202 was committed
    finally:
        close_all(held)
        proxy.stop()


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_descriptors_running_out_before_the_connection_limit_is_logged_counted_and_survived(tmp_path, event_loop):
    """max_connections set above what the descriptors allow: accept itself fails with EMFILE. The
    proxy frees a descriptor by closing an idle connection, counts and logs the shortage, and goes
    on answering. (uvloop would otherwise drop every waiting connection silently.)"""
    proxy = ProxyProcess(tmp_path / "data", preexec_fn=descriptors(NOFILE), extra_env={
        "METRICS_PROXY_MAX_CONNECTIONS": str(8 * NOFILE), "METRICS_PROXY_EVENT_LOOP": event_loop,
    }).start()
    held: list[socket.socket] = []
    try:
        posts, held = flood_and_check(proxy)
        log = proxy.log()
        assert f"max_connections {8 * NOFILE} is more than RLIMIT_NOFILE {NOFILE} leaves" in log
        assert f"out of file descriptors (RLIMIT_NOFILE {NOFILE})" in log
        text = scrape(proxy.url)
        assert samples(text, "metrics_proxy_fd_exhaustion_total")[""] > 0
        assert samples(text, "metrics_proxy_connections_closed_total")['{reason="evicted"}'] > 0
        close_all(held)
        assert stored_yes_last_hour_sync(proxy.url) == yes_acknowledged(posts)
    finally:
        close_all(held)
        proxy.stop()


def test_a_request_whose_headers_never_finish_is_closed_after_request_header_timeout(tmp_path):
    """Slowloris: partial headers, trickled or not, and a connection that sends nothing are closed
    after request_header_timeout; a keep-alive connection between requests is not (keepalive_timeout)."""
    proxy = ProxyProcess(tmp_path / "data", extra_env={
        "METRICS_PROXY_REQUEST_HEADER_TIMEOUT": "1", "METRICS_PROXY_KEEPALIVE_TIMEOUT": "30",
    }).start()
    sockets: list[socket.socket] = []
    try:
        silent = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        partial, trickle, keep_alive = half_requests(proxy.port, 3)
        sockets += [silent, partial, trickle, keep_alive]
        keep_alive.sendall(b"Content-Length: 2\r\n\r\n{}")  # completes a request: answered, then idle
        assert keep_alive.recv(65536).startswith(b"HTTP/1.1 ")
        started = time.monotonic()
        try:  # a header line every 0.2 s: the deadline is for the whole headers, not for each read
            for _ in range(20):
                trickle.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.2)
        except OSError:  # closed by the proxy (EPIPE or a reset)
            pass
        assert time.monotonic() - started < 2.5
        assert closed_by_proxy(trickle, 0.5)
        assert closed_by_proxy(partial, 0.5) and closed_by_proxy(silent, 0.5)
        assert not closed_by_proxy(keep_alive, 1.0)  # idle past the header timeout: still open
        keep_alive.sendall(b"GET /internal-backstage/health HTTP/1.1\r\nHost: proxy\r\n\r\n")
        assert keep_alive.recv(65536).startswith(b"HTTP/1.1 200")
        assert health(proxy.url) == 200
        text = scrape(proxy.url)
        assert samples(text, "metrics_proxy_connections_closed_total")['{reason="header_timeout"}'] == 3
        assert "closed 1 connections that sent no complete request headers within 1 s" in proxy.log()
    finally:
        close_all(sockets)
        proxy.stop()


def test_the_soft_descriptor_limit_is_raised_to_the_hard_limit_at_start(tmp_path):
    proxy = ProxyProcess(tmp_path / "data", preexec_fn=descriptors(NOFILE, hard=4 * NOFILE)).start()
    try:
        assert f"RLIMIT_NOFILE soft {NOFILE}, hard {4 * NOFILE} at start: soft limit raised to {4 * NOFILE}" in proxy.log()
        text = scrape(proxy.url)
        assert samples(text, "metrics_proxy_open_files_limit")[""] == 4 * NOFILE
        # Connections a default max_connections leaves room for: more than the limit at start.
        held = half_requests(proxy.port, 2 * NOFILE)
        try:
            assert health(proxy.url) == 200
            assert samples(scrape(proxy.url), "metrics_proxy_open_connections")[""] > NOFILE
        finally:
            close_all(held)
    finally:
        proxy.stop()


def test_ingest_workers_guard_their_connections_and_the_scrape_adds_their_counters(tmp_path):
    """workers = 2: the kernel spreads connections over both processes; each closes its own
    half-sent requests, and the primary's scrape counts them all."""
    proxy = ProxyProcess(tmp_path / "data", extra_env={
        "METRICS_PROXY_WORKERS": "2", "METRICS_PROXY_REQUEST_HEADER_TIMEOUT": "1",
    }).start()
    held: list[socket.socket] = []
    try:
        wait_for_log(proxy, "worker 1 listening")
        assert "[worker 1] proxy.api.connections: RLIMIT_NOFILE soft" in proxy.log()
        held = half_requests(proxy.port, 24)
        assert all(closed_by_proxy(sock, 3.0) for sock in held)
        time.sleep(1.5)  # the worker writes its counters every second
        text = scrape(proxy.url)
        assert samples(text, "metrics_proxy_connections_closed_total")['{reason="header_timeout"}'] == 24
        assert samples(text, "metrics_proxy_connections_accepted_total")[""] >= 24
        assert "[worker 1] proxy.api.connections: closed" in proxy.log()  # the worker took some of them
    finally:
        close_all(held)
        proxy.stop()


def stored_yes_last_hour_sync(url: str) -> int:
    import asyncio

    return asyncio.run(stored_yes_last_hour(url))
