"""The primary's side of `workers = N`: starts the N - 1 ingest workers once its store is open and
its private socket answers, restarts one that dies, publishes whether ingest is refused, and on
shutdown stops them before the store's final fold (which then drains their journals)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from proxy.api.state import SETTINGS, STORE
from proxy.config import ConfigError
from proxy.observability import worker_stats
from proxy.storage.shards.shard_store import REFUSAL_CHECK_SECONDS, SYNC_SECONDS, refusal_marker
from proxy.workers.passthrough import primary_socket_path

log = logging.getLogger(__name__)

RESTART_BACKOFF_SECONDS = 1.0
STOP_GRACE_SECONDS = 20.0
SOCKET_WAIT_SECONDS = 30.0
PR_SET_PDEATHSIG = 1

# The `serve` arguments this process was started with; workers get the same plus --worker-index.
SERVE_ARGV = web.AppKey("serve_argv", list)


def _die_with_parent(parent: int) -> None:
    """preexec_fn: the kernel SIGKILLs the worker when the primary dies, even by kill -9, so no
    worker is left holding the port."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the primary died before prctl took effect
        os._exit(1)


class Supervisor:
    def __init__(self, count: int, argv: list[str], data_dir: Path) -> None:
        self.count = count
        self.argv = argv
        self.data_dir = data_dir
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._stopping = False

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        parent = os.getpid()
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", *self.argv, "--worker-index", str(index),
            preexec_fn=lambda: _die_with_parent(parent),
        )

    async def keep_running(self, index: int) -> None:
        while not self._stopping:
            process = self.processes[index] = await self._spawn(index)
            if self._stopping:  # stop() ran while this one was starting
                process.send_signal(signal.SIGTERM)
                await process.wait()
                return
            log.info("worker %d started (pid %d)", index, process.pid)
            code = await process.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("worker %d (pid %d) exited unexpectedly with %s; restarting in %.0f s",
                      index, process.pid, code, RESTART_BACKOFF_SECONDS)
            await asyncio.sleep(RESTART_BACKOFF_SECONDS)

    async def stop(self) -> None:
        """SIGTERM every worker and wait: each commits what it has queued before it exits."""
        self._stopping = True
        running = [p for p in self.processes.values() if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
            except TimeoutError:
                log.error("worker pid %d did not stop in %.0f s; killing it", process.pid, STOP_GRACE_SECONDS)
                process.kill()
                await process.wait()


def hold_data_dir(data_dir: Path) -> None:
    """One primary per data folder: with SO_REUSEPORT a second one could bind the same port and
    open the same database, a second writer. The lock lives as long as the process."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "primary.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"data_dir {data_dir} is in use by another metrics-proxy") from None
    _held.append(handle)


_held: list = []


async def _socket_answers(path: Path, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def _publish_refusal(app: web.Application) -> None:
    """Workers refuse ingest while the primary's store is full ("refuse"): a marker file they check."""
    store, marker = app[STORE], refusal_marker(app[SETTINGS].database_path.parent)
    while True:
        try:
            refusing = store.refusing_ingest()
        except Exception as exc:  # noqa: BLE001 - a failed check must not stop publishing
            log.warning("could not check the store's room: %s", exc)
        else:
            if refusing and not marker.exists():
                marker.touch()
            elif not refusing and marker.exists():
                marker.unlink(missing_ok=True)
        await asyncio.sleep(REFUSAL_CHECK_SECONDS)


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Appended after the store's context: starts after it opens, stops before it closes."""
    settings = app[SETTINGS]
    data_dir = settings.database_path.parent
    supervisor = Supervisor(settings.workers - 1, app.get(SERVE_ARGV) or ["serve"], data_dir)
    refusal_marker(data_dir).unlink(missing_ok=True)
    worker_stats.remove_all(data_dir)  # counters start over with the primary, the workers' too

    async def start() -> None:
        await _socket_answers(primary_socket_path(data_dir), SOCKET_WAIT_SECONDS)
        await asyncio.gather(*(supervisor.keep_running(k) for k in range(1, supervisor.count + 1)))

    tasks = [asyncio.create_task(start(), name="ingest-workers"),
             asyncio.create_task(_publish_refusal(app), name="refusal-publisher"),
             asyncio.create_task(app[STORE].run_shard_puller(SYNC_SECONDS), name="shard-puller")]
    yield
    await supervisor.stop()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await task
    log.info("ingest workers stopped; the final fold drains their journals")
