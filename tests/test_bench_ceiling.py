"""The durable ceiling that bench.ingest measures the proxy against is only a fair ceiling if it
is really durable: a 202 goes out after the body is in its log file and synced, each body once.
Real HTTP on loopback against `bench/ceiling_server.py` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bench import ceiling_server
from bench.ceiling_server import records
from tests.reliability.power_cut import build_shim, c_compiler, cut_power, shim_env
from tests.support import free_port, wait_healthy

METRICS = "/api/client/metrics"


def start(folder: Path, *options: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, ceiling_server.__file__, str(port), "--dir", str(folder), "--log-mib", "1", *options]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


def logged(folder: Path) -> list[bytes]:
    return [body for path in sorted(folder.glob("ceiling-*.log")) for body in records(path)]


@pytest.mark.parametrize("options", [(), ("--flush", "loop"), ("--processes", "2")],
                         ids=["thread", "loop", "two-processes"])
async def test_each_body_is_in_the_log_once_when_its_202_arrives(tmp_path, options):
    proc, url = start(tmp_path, *options)
    early = []

    async def post(session: aiohttp.ClientSession, body: bytes) -> None:
        async with session.post(url + METRICS, data=body) as response:
            assert response.status == 202
        if body not in logged(tmp_path):
            early.append(body)

    try:
        bodies = [f'{{"post": {n}, "pad": "{"x" * (n % 50)}"}}'.encode() for n in range(300)]
        # force_close: a new connection per post, so with two processes both get some
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32, force_close=True)) as session:
            await asyncio.gather(*(post(session, body) for body in bodies))
        assert early == []
        in_log = logged(tmp_path)
        assert sorted(in_log) == sorted(bodies)  # each once, nothing else
        if "--processes" in options:
            assert all(records(path) for path in tmp_path.glob("ceiling-*.log")), "one process got nothing"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_202_survives_a_power_cut(tmp_path):
    """The server runs with the power-cut shim (tests/reliability/power_cut.py), which keeps an undo
    record of every write until the file is synced; it is SIGKILLed while its log has a write not
    yet synced (inside a flush) and the cut takes back every such write. Every post answered 202
    must still be in the log; a post whose answer was lost may be there or not; nothing else."""
    if not c_compiler():
        pytest.skip("no C compiler (gcc or cc) to build the power-cut shim; .ci/run installs gcc")
    shim = build_shim(tmp_path)
    # On a loaded box the flush seen in progress may finish before the kill lands: then nothing is
    # at stake in that attempt, and the test tries again with a new server and log.
    for attempt in range(5):
        cut, in_log, acked, sent = _kill_during_load(tmp_path / f"attempt-{attempt}", shim)
        assert acked and acked <= set(in_log), f"{len(acked - set(in_log))} acknowledged posts lost"
        assert len(in_log) == len(set(in_log)) and set(in_log) <= sent
        if cut.lost_writes.get("ceiling-0.log", 0) >= 1:
            break
    assert cut.lost_writes.get("ceiling-0.log", 0) >= 1, "the kill did not land inside a flush in 5 attempts"


def _kill_during_load(folder, shim):
    """Start the server under the power-cut shim, post from 16 clients, SIGKILL it while its log
    has a write not yet synced, cut the power: (the cut, the log's records, acked, sent)."""
    logs, undo = folder / "logs", folder / "undo"
    logs.mkdir(parents=True)
    proc, url = start(logs, env={**os.environ, **shim_env(shim, logs, undo)})
    acked, sent = set(), set()

    async def poster(worker: int, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            n = 0
            while not stop.is_set():
                body = f"worker {worker} post {n}".encode()
                n += 1
                sent.add(body)
                try:
                    async with session.post(url + METRICS, data=body) as response:
                        if response.status == 202:
                            acked.add(body)
                except aiohttp.ClientError:
                    return  # killed

    def kill_inside_a_flush(timeout: float = 5.0) -> None:
        time.sleep(0.5)  # some groups committed first
        undo_log = undo / "ceiling-0.log.undo"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if undo_log.exists() and undo_log.stat().st_size > 0:
                break
        proc.kill()
        proc.wait(10)

    async def load() -> None:
        stop = asyncio.Event()
        posters = [asyncio.create_task(poster(w, stop)) for w in range(16)]
        await asyncio.to_thread(kill_inside_a_flush)
        stop.set()
        await asyncio.gather(*posters)

    asyncio.run(load())
    cut = cut_power(logs, undo)
    in_log = records(logs / "ceiling-0.log")
    return cut, in_log, acked, sent
