"""The proxy's TCP port: how many connections it holds, how long one may take to send a request's
headers, and what happens when descriptors run out. docs/connections.md tells the whole story.

Every process (the primary and each ingest worker) raises its soft RLIMIT_NOFILE to the hard limit
at start, then serves its TCP port through a GuardedSite instead of aiohttp's TCPSite:

- The site accepts connections itself (an accept loop on the listening sockets) rather than leaving
  accept to the event loop: uvloop's libuv silently accepts and closes every waiting connection when
  accept fails with EMFILE, and the standard loop logs a traceback per failure. Here each failure is
  counted and logged at most once per interval, and handled (below).
- At most `max_connections` connections are held. A new one beyond that closes the oldest idle
  connection to make room (one that never sent a complete request first, then an idle keep-alive
  one), so a flood of idle or half-sent connections cannot lock out health checks or SDKs; only when
  every held connection is busy with a request is the new one refused: answered 503 and closed at
  once, so the listen backlog never fills with clients that wait in vain.
- A connection must complete its first request's headers within `request_header_timeout` seconds
  of being accepted (slowloris, and clients that connect and send nothing). Between requests,
  aiohttp's keep-alive timer closes a connection idle for `keepalive_timeout`, a request's headers
  still incomplete included.
- When accept fails for want of a descriptor, an idle connection is closed to free one; with none
  idle, the waiting connections are refused (503) through a descriptor held in reserve for this.

Each accepted connection is handed to the event loop with connect_accepted_socket and served by
aiohttp's own RequestHandler, wrapped in a GuardedConnection that tells the guard when it opens and
closes. Whether a connection is idle, and whether it has completed a request's headers, is read from
the RequestHandler (see _idle and _requests_parsed): the only aiohttp internals used, and the tests
in tests/test_connections.py and tests/test_connection_guard.py fail if they change.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

import msgspec
from aiohttp import web

from proxy.api.schemas.errors import ErrorBody, ErrorDetail
from proxy.config import Settings
from proxy.observability.connections import (
    CLOSED_EVICTED,
    CLOSED_HEADER_TIMEOUT,
    REFUSED_DESCRIPTORS,
    REFUSED_LIMIT,
    ConnectionStats,
)

log = logging.getLogger(__name__)

CONNECTION_STATS = web.AppKey("connection_stats", ConnectionStats)

LOG_INTERVAL_SECONDS = 10.0  # each kind of connection trouble is logged at most this often
ACCEPT_BATCH = 64  # accepts per wake-up of a listening socket, so a connect flood cannot starve requests
EVICTION_SCAN = 64  # the oldest held connections looked at for an idle one to close
# Seconds accept rests after it failed for want of a descriptor, unless a connection closes sooner.
OUT_OF_DESCRIPTORS_PAUSE = 0.05
ACCEPT_ERROR_PAUSE = 1.0  # ... and after any other unexpected accept error
DEFAULT_BACKLOG = 128
# Descriptors kept for everything but client connections: standard streams, SQLite's database,
# -wal and -shm files (and the workers' journals), the upstream client's connections, the features
# poller, listening and signal sockets, the event loop's own, the reserve descriptor...
RESERVED_DESCRIPTORS = 64
# A default max_connections above this is not taken even if the descriptor limit allows it: every
# held connection costs memory too (a few KiB each with aiohttp's buffers).
DEFAULT_MAX_CONNECTIONS_CEILING = 16384
DESCRIPTOR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
# Accept failures that a moment's rest may cure: out of descriptors, or of kernel memory.
RESOURCE_ERRNOS = DESCRIPTOR_ERRNOS | {errno.ENOBUFS, errno.ENOMEM}


# --- the descriptor limit ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DescriptorLimit:
    soft_at_start: int
    hard: int
    soft: int  # after raise_descriptor_limit


def _shown(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


def raise_descriptor_limit() -> DescriptorLimit:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit, and log both before and after.

    Many systems start services with a soft limit of 1024 (systemd's default) while allowing far
    more: every client connection takes a descriptor, so the soft limit is what caps connections.
    The hard limit is the administrator's (systemd's LimitNOFILE=, ulimit -Hn) and is respected."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        log.info("RLIMIT_NOFILE soft %s, hard %s at start: the soft limit is the hard limit already",
                 _shown(soft), _shown(hard))
        return DescriptorLimit(soft, hard, soft)
    # An unlimited hard limit is refused for descriptors on Linux (nr_open) and macOS (OPEN_MAX).
    targets = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 65536, 10240]
    failure: Exception | None = None
    for target in targets:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            failure = exc
            continue
        log.info("RLIMIT_NOFILE soft %s, hard %s at start: soft limit raised to %d", _shown(soft), _shown(hard), target)
        return DescriptorLimit(soft, hard, target)
    log.warning("RLIMIT_NOFILE soft %s, hard %s at start: could not raise the soft limit (%s); it stays %s",
                _shown(soft), _shown(hard), failure, _shown(soft))
    return DescriptorLimit(soft, hard, soft)


def default_max_connections(soft_limit: int, reserved: int = 0) -> int:
    """What the descriptor limit leaves for client connections: the limit less RESERVED_DESCRIPTORS,
    an eighth of it for anything unforeseen and `reserved` (the primary: its workers' connections to
    it); at least a quarter of the limit, at most DEFAULT_MAX_CONNECTIONS_CEILING."""
    if soft_limit == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS_CEILING
    left = soft_limit - RESERVED_DESCRIPTORS - soft_limit // 8 - reserved
    return max(1, min(max(left, soft_limit // 4), DEFAULT_MAX_CONNECTIONS_CEILING))


def connection_guard(settings: Settings, stats: ConnectionStats, descriptors: DescriptorLimit,
                     reserved: int = 0) -> ConnectionGuard:
    """The guard of this process's TCP port, from the options and the (raised) descriptor limit;
    `reserved`: descriptors kept out of a default max_connections besides the usual reserve."""
    room = default_max_connections(descriptors.soft, reserved)
    limit = settings.max_connections or room
    log.info("connections: at most %d held (max_connections%s), first request's headers within %g s "
             "(request_header_timeout), idle keep-alive %g s (keepalive_timeout)",
             limit, "" if settings.max_connections else " from RLIMIT_NOFILE", settings.request_header_timeout,
             settings.keepalive_timeout)
    if settings.max_connections > room:
        log.warning("max_connections %d is more than RLIMIT_NOFILE %s leaves for connections (%d): descriptors "
                    "may run out first, and then connections are refused at accept",
                    settings.max_connections, _shown(descriptors.soft), room)
    return ConnectionGuard(limit, settings.request_header_timeout, stats, descriptors.soft)


# --- what aiohttp's RequestHandler tells about a connection -----------------------------------


def _idle(handler: web.RequestHandler) -> bool:
    """Waiting for a request: none is being handled, and the next one's headers are incomplete or
    not begun. aiohttp parks such a connection on `_waiter`, and its keep-alive timer closes a
    connection on the same test."""
    waiter = handler._waiter
    if waiter is not None and not waiter.done():
        return True
    # Just accepted, its handler task not yet run (a loaded loop lags): no waiter yet, but with no
    # request parsed or queued it cannot be busy with one.
    return handler._request_count == 0 and not handler._messages and not handler._request_in_progress


def _requests_parsed(handler: web.RequestHandler) -> int:
    """Requests whose headers were complete on this connection (aiohttp counts each as it is queued)."""
    return handler._request_count


# --- refusing ----------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
REFUSAL_MESSAGE = "the proxy holds as many connections as it can; retry shortly"


def refusal() -> bytes:
    """A whole HTTP answer for a connection refused at accept: 503, the JSON error body, and
    Connection: close. Written before the request is read, as the connection is closed anyway."""
    body = _encode(ErrorBody(id=str(uuid.uuid4()), name="ServiceUnavailableError", message=REFUSAL_MESSAGE,
                             details=[ErrorDetail(message=REFUSAL_MESSAGE)]))
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def _refuse(sock: socket.socket) -> None:
    try:
        sock.setblocking(False)
        sock.send(refusal())  # a new connection's send buffer takes it whole
        # Read what the client sent already: closing a socket with unread bytes resets the
        # connection, and the client might then miss the answer.
        for _ in range(4):
            if not sock.recv(65536):
                break
    except OSError:
        pass  # nothing more to read (BlockingIOError), or the client left
    finally:
        sock.close()


def _reserve_descriptor() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


# --- logging at most once per interval ---------------------------------------------------------


class IntervalLog:
    """One kind of event, logged at once when it first happens and then at most once per interval,
    each line with the counts since the previous one."""

    def __init__(self, level: int, render: Callable[[Counter[str]], str], interval: float = LOG_INTERVAL_SECONDS):
        self.level = level
        self.render = render
        self.interval = interval
        self.pending: Counter[str] = Counter()
        self._next = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, **counts: int) -> None:
        self.pending.update(counts)
        if self._timer is not None:
            return
        wait = self._next - time.monotonic()
        if wait <= 0:
            self.flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        self._timer = None
        if self.pending:
            log.log(self.level, self.render(self.pending))
            self.pending = Counter()
            self._next = time.monotonic() + self.interval

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()


# --- the guard ---------------------------------------------------------------------------------


class GuardedConnection(asyncio.Protocol):
    """aiohttp's RequestHandler for one connection, with the guard told when it opens and closes
    and a deadline for its first request's headers. Everything else goes straight through."""

    __slots__ = ("guard", "handler", "made", "closing", "_deadline")

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.handler: web.RequestHandler | None = None
        self.made = False
        self.closing = False  # closed by the guard; its descriptor is free once connection_lost runs
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        self.made = True
        self.handler = guard.new_handler()
        guard.opened(self)
        self._deadline = asyncio.get_running_loop().call_later(guard.header_timeout, self._header_deadline)
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self.guard.lost(self)
        self.handler.connection_lost(exc)

    def _header_deadline(self) -> None:
        self._deadline = None
        if _requests_parsed(self.handler) == 0:
            self.guard.close(self, CLOSED_HEADER_TIMEOUT)


class ConnectionGuard:
    """Admits, times out and evicts the connections of one process's TCP port (module docstring)."""

    def __init__(self, limit: int, header_timeout: float, stats: ConnectionStats, descriptor_limit: int) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.stats = stats
        self.descriptor_limit = descriptor_limit
        stats.limit = limit
        self._server: web.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Held connections, oldest first; a busy one seen by an eviction scan moves to the back.
        self._held: dict[GuardedConnection, None] = {}
        self._admitting = 0  # handed to the event loop, connection_made not yet run
        self._closing = 0  # closed by the guard, connection_lost not yet run
        self._reserve: int | None = None
        self._handovers: set[asyncio.Task] = set()
        self._short_of_descriptors: set[_Listener] = set()  # paused until a connection closes
        self._stopped = False
        self._limit_log = IntervalLog(logging.WARNING, self._render_limit)
        self._descriptor_log = IntervalLog(logging.ERROR, self._render_descriptors)
        self._timeout_log = IntervalLog(logging.INFO, self._render_timeouts)

    @property
    def holding(self) -> int:
        return len(self._held) + self._admitting

    def start(self, server: web.Server, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        if self._reserve is None:
            self._reserve = _reserve_descriptor()

    def close(self, connection: GuardedConnection, reason: str) -> None:
        """Close a held connection for `reason` (a CLOSED_* of observability/connections.py)."""
        if connection.closing:
            return
        connection.closing = True
        self._held.pop(connection, None)
        self._closing += 1
        self.stats.closed[reason] += 1
        self.stats.open = self.holding
        if reason == CLOSED_HEADER_TIMEOUT:
            self._timeout_log.add(closed=1)
        connection.handler.force_close()

    def stop(self) -> None:
        """The site stopped accepting; the connections still held are the HTTP server's to close."""
        self._stopped = True
        self._short_of_descriptors.clear()
        for report in (self._limit_log, self._descriptor_log, self._timeout_log):
            report.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    # The connection's side.

    def new_handler(self) -> web.RequestHandler:
        assert self._server is not None
        return self._server()

    def opened(self, connection: GuardedConnection) -> None:
        self._admitting -= 1
        self._held[connection] = None
        self.stats.open = self.holding

    def lost(self, connection: GuardedConnection) -> None:
        if connection.closing:
            self._closing -= 1
        else:
            self._held.pop(connection, None)
            self.stats.open = self.holding
        # Its descriptor is freed as the transport finishes closing: the reserve is taken again
        # first (if this one is not free yet, the next close retries), then paused listeners resume.
        if self._stopped:
            return
        if self._reserve is None:
            self._reserve = _reserve_descriptor()
        if self._short_of_descriptors:
            for listener in self._short_of_descriptors:
                self._loop.call_soon(listener.resume)
            self._short_of_descriptors.clear()

    # The listener's side.

    def admit(self, sock: socket.socket) -> None:
        """A connection just accepted: hand it to the HTTP server, or refuse it."""
        if self.holding >= self.limit:
            if self._evict():
                self._limit_log.add(evicted=1)
            else:
                self.stats.refused[REFUSED_LIMIT] += 1
                self._limit_log.add(refused=1)
                _refuse(sock)
                return
        self._admitting += 1
        self.stats.accepted += 1
        self.stats.open = self.holding
        try:
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # the client is gone already: the hand-over below finds out and cleans up
        connection = GuardedConnection(self)
        task = self._loop.create_task(self._hand_over(connection, sock))
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def _hand_over(self, connection: GuardedConnection, sock: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: connection, sock)
        except OSError as exc:
            log.debug("connection lost before it was set up: %s", exc)
        finally:
            if not connection.made:  # else the transport owns the socket, and connection_lost follows
                self._admitting -= 1
                self.stats.open = self.holding
                sock.close()

    def out_of_descriptors(self, listener: _Listener, exc: OSError) -> None:
        """accept() failed with EMFILE, ENFILE, ENOBUFS or ENOMEM; the listener has paused."""
        if exc.errno in DESCRIPTOR_ERRNOS:
            self.stats.descriptor_exhaustion += 1
        counts = Counter(failed=1)
        if self._closing == 0:  # no descriptor on its way back yet: free one
            if self._evict():
                counts["evicted"] += 1
            else:
                counts["refused"] += self._refuse_waiting(listener.sock)
        self._short_of_descriptors.add(listener)
        self._descriptor_log.add(**counts)

    def _evict(self) -> bool:
        """Close the oldest idle connection that never completed a request's headers, else the
        oldest idle one, among the EVICTION_SCAN oldest held. False if all of those are busy."""
        fallback = None
        for connection in list(islice(self._held, EVICTION_SCAN)):
            if not _idle(connection.handler):
                # Busy: to the back, so that the next scan looks at other connections.
                del self._held[connection]
                self._held[connection] = None
                continue
            if _requests_parsed(connection.handler) == 0:
                self.close(connection, CLOSED_EVICTED)
                return True
            if fallback is None:
                fallback = connection
        if fallback is None:
            return False
        self.close(fallback, CLOSED_EVICTED)
        return True

    def _refuse_waiting(self, sock: socket.socket) -> int:
        """Refuse the connections waiting on `sock` with the reserve descriptor: each is accepted,
        answered 503 and closed, which frees the descriptor for the next."""
        if self._reserve is None:
            return 0
        os.close(self._reserve)
        self._reserve = None
        refused = 0
        try:
            for _ in range(ACCEPT_BATCH):
                try:
                    client, _address = sock.accept()
                except OSError:
                    break  # none waiting, or still no descriptor
                self.stats.refused[REFUSED_DESCRIPTORS] += 1
                refused += 1
                _refuse(client)
        finally:
            self._reserve = _reserve_descriptor()
        return refused

    # What the log says.

    def _render_limit(self, counts: Counter[str]) -> str:
        return (f"connection limit reached (max_connections {self.limit}): closed {counts['evicted']} idle "
                f"connections to make room and refused {counts['refused']} with 503 (all busy) since the last "
                f"report; {self.holding} open")

    def _render_descriptors(self, counts: Counter[str]) -> str:
        return (f"out of file descriptors (RLIMIT_NOFILE {_shown(self.descriptor_limit)}): accept failed "
                f"{counts['failed']} times; closed {counts['evicted']} idle connections to free descriptors and "
                f"refused {counts['refused']} with 503 since the last report; {self.holding} open "
                f"(see docs/connections.md)")

    def _render_timeouts(self, counts: Counter[str]) -> str:
        return (f"closed {counts['closed']} connections that sent no complete request headers within "
                f"{self.header_timeout:g} s (request_header_timeout) since the last report")


# --- the listening sockets ---------------------------------------------------------------------


def listening_sockets(host: str | None, port: int, *, reuse_port: bool = False,
                      backlog: int = DEFAULT_BACKLOG) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address `host` resolves to. Raises
    OSError (e.g. the port is taken)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as the event loops' create_server: no IPv4 on an IPv6 socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Listener:
    """Accepts on one listening socket whenever it is readable, and gives each connection to the guard."""

    def __init__(self, sock: socket.socket, guard: ConnectionGuard, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.guard = guard
        self.loop = loop
        self._resume: asyncio.TimerHandle | None = None
        self.closed = False

    def start(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self._ready)

    def _pause(self, seconds: float) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self._resume = self.loop.call_later(seconds, self.resume)

    def resume(self) -> None:
        if self._resume is None or self.closed:
            return  # not paused (resumed already), or closed
        self._resume.cancel()
        self._resume = None
        self.start()

    def _ready(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self._pause(OUT_OF_DESCRIPTORS_PAUSE)
                    self.guard.out_of_descriptors(self, exc)
                else:
                    log.error("accept on %s failed: %s; trying again in %.0f s",
                              self.sock.getsockname(), exc, ACCEPT_ERROR_PAUSE)
                    self._pause(ACCEPT_ERROR_PAUSE)
                return
            self.guard.admit(sock)

    def close(self) -> None:
        self.closed = True
        if self._resume is not None:
            self._resume.cancel()
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite with the connection guard in front: the runner's HTTP server answers the
    connections the guard admits."""

    __slots__ = ("_host", "_port", "_reuse_port", "_guard", "_listeners")

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, guard: ConnectionGuard, *,
                 reuse_port: bool = False, backlog: int = DEFAULT_BACKLOG) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._guard = guard
        self._listeners: list[_Listener] = []

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the one asked for until started; useful with port 0)."""
        return self._listeners[0].sock.getsockname()[1] if self._listeners else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        sockets = listening_sockets(self._host, self._port, reuse_port=self._reuse_port, backlog=self._backlog)
        self._guard.start(self._runner.server, loop)
        self._listeners = [_Listener(sock, self._guard, loop) for sock in sockets]
        for listener in self._listeners:
            listener.start()

    async def stop(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._guard.stop()
        await super().stop()
