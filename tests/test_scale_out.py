"""A shared tier of three real proxies, each with its own data folder, behind a round-robin TCP
balancer: many SDK clients post through it while one replica is SIGKILLed and restarted and
another is SIGTERMed for good (its final flush must deliver its backlog). Every acknowledged count
reaches the upstream exactly once, because each replica forwards its own additive deltas under its
own idempotency keys and keeps them on its own disk until the upstream took them.

Each post carries a flag of its own, so the upstream's totals can be checked post by post: an
acknowledged post arrives exactly once; a post whose connection broke before its answer (the
client cannot know whether it was committed, and does not resend it) arrives once or not at all;
nothing else arrives."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter

import aiohttp

from tests.forwarding import metrics_body, upstream_env
from tests.support import ProxyProcess, client_headers, free_port

CLIENTS = 24
POSTS_PER_CLIENT = 25
TIME_LIMIT = 60.0


class RoundRobin:
    """A TCP balancer on loopback: each new connection goes to the next replica that accepts it."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.turn = itertools.cycle(range(len(ports)))
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.connections: Counter[int] = Counter()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend = None
        for _ in self.ports:
            port = self.ports[next(self.turn)]
            with contextlib.suppress(OSError):
                backend = await asyncio.open_connection("127.0.0.1", port)
                self.connections[port] += 1
                break
        if backend is None:  # no replica accepts: the client sees a closed connection
            client_writer.close()
            return
        backend_reader, backend_writer = backend

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, backend_writer), pipe(backend_reader, client_writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_three_replicas_deliver_every_acknowledged_count_exactly_once(proxies, tmp_path, stub):
    started = time.monotonic()
    env = upstream_env(stub.url)
    replicas = [ProxyProcess(tmp_path / f"replica-{n}", extra_env=env) for n in range(3)]
    # The replica that is stopped for good sends nothing until its final flush.
    replicas[2].extra_env = {**env, "METRICS_PROXY_UPSTREAM_FLUSH_INTERVAL": "3600"}
    proxies.extend(replicas)
    await asyncio.gather(*(asyncio.to_thread(r.start) for r in replicas))
    balancer = RoundRobin([r.port for r in replicas])
    await balancer.start()

    acknowledged: Counter = Counter()  # (flag, "yes"/"no") -> counts of posts answered 202
    unanswered: dict[str, tuple[int, int]] = {}  # flag -> counts of posts whose connection broke
    done = Counter()
    restarted = Counter()

    async def sdk(client: int) -> None:
        # A new connection per post (as after an SDK's idle interval), so posts spread over replicas.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for n in range(POSTS_PER_CLIENT):
                flag, yes, no = f"c{client}-p{n}", 1 + (client + n) % 7, (client * n) % 3
                body = metrics_body({flag: (yes, no)}, time.time(), app=f"app-{client % 4}")
                try:
                    async with session.post(f"http://127.0.0.1:{balancer.port}/api/client/metrics", json=body,
                                            headers=client_headers(), timeout=aiohttp.ClientTimeout(total=10)) as r:
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    unanswered[flag] = (yes, no)
                    continue
                assert status in (202, 503), status  # 503: a replica stopping, not committed
                if status == 202:
                    acknowledged[(flag, "yes")] += yes
                    acknowledged[(flag, "no")] += no
                done["posts"] += 1
                await asyncio.sleep(0.1)  # about a post per client every 0.1 s: the load lasts seconds

    async def disturb() -> None:
        total = CLIENTS * POSTS_PER_CLIENT
        while done["posts"] < total // 3:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(replicas[1].kill)  # SIGKILL mid-load ...
        await asyncio.sleep(0.3)
        await asyncio.to_thread(replicas[1].start)  # ... and back, on its own folder
        restarted["connections"] = balancer.connections[replicas[1].port]
        while done["posts"] < 2 * total // 3:
            await asyncio.sleep(0.01)
        assert await asyncio.to_thread(replicas[2].terminate) == 0  # SIGTERM, for good

    await asyncio.wait_for(asyncio.gather(*(sdk(c) for c in range(CLIENTS)), disturb()), TIME_LIMIT)
    assert min(balancer.connections.values()) > 0 and len(balancer.connections) == 3
    assert balancer.connections[replicas[1].port] > restarted["connections"] + 10  # served again after its restart
    assert sum(v for (_, kind), v in acknowledged.items() if kind == "yes") > 0

    def arrived() -> Counter:
        totals: Counter = Counter()
        for rec in stub.delivered():
            for m in rec.body["metrics"]:
                totals[(m["featureName"], "yes")] += m["yes"]
                totals[(m["featureName"], "no")] += m["no"]
        return totals

    def settled() -> bool:
        got = arrived()
        return all(got[key] >= value for key, value in acknowledged.items())

    while not settled():
        assert time.monotonic() - started < TIME_LIMIT, "the acknowledged counts did not all arrive in time"
        await asyncio.sleep(0.1)
    for replica in (replicas[0], replicas[1]):
        assert await asyncio.to_thread(replica.terminate) == 0
    await balancer.close()

    got = +arrived()
    acknowledged_flags = {flag for flag, _ in acknowledged}
    for flag in acknowledged_flags:  # exactly once
        assert (got[(flag, "yes")], got[(flag, "no")]) == (acknowledged[(flag, "yes")], acknowledged[(flag, "no")]), flag
    for flag, (yes, no) in unanswered.items():  # once or not at all
        assert (got[(flag, "yes")], got[(flag, "no")]) in ((yes, no), (0, 0)), flag
    assert {flag for flag, _ in got} <= acknowledged_flags | set(unanswered)
    assert stub.resent == []
    assert time.monotonic() - started < TIME_LIMIT
