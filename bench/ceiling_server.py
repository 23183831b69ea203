"""The durable ceiling for this stack: the bare handler (bench/bare_server.py), plus a power-safe log.

Each POST body is read and appended to a log file; concurrent requests share one `os.fdatasync`
(group commit), and each answer 202 goes out only after the flush that covers its body. That is
the least any server on this stack must do before a power-safe 202, with nothing of the proxy's
own work (no auth, no decoding, no merge, no SQLite), so `bench.ingest` compares the proxy with it.

    python bench/ceiling_server.py PORT [--processes 2] [--flush thread|loop] [--dir DIR]

How it groups: a request queues its body and waits; one flusher task takes everything queued,
writes it with one `pwrite` and one `fdatasync`, then answers all of it. Requests that arrive
while a flush runs queue for the next one. Before taking a group the flusher lets the loop run
once more, so that requests whose bytes have already arrived join it (the proxy's writer does the
same).

Choices, each the faster of what was measured (`python -m bench.ceiling_variants` measures them
again; figures in docs/performance.md), since a ceiling must be the best this stack does durably:

- The flush runs on a helper thread (`--flush thread`), not on the event loop (`--flush loop`):
  `fdatasync` releases the GIL, so the loop goes on reading and parsing the next requests while
  the disk works, and they form the next group. On the loop, nothing is read during a flush.
- The log is a file written to its full size (`--log-mib`, zeros) and fsynced once at start, then
  filled from the front and restarted at the front when full, as SQLite reuses its `-wal` file:
  overwriting blocks that are already allocated needs no metadata in the flush. Appending to a
  growing file (`--grow`) made each flush dearer here, 300-400 us of wall time and 110-160 us of
  CPU against 200-220 us and 60-65 us, because `fdatasync` then also commits the file system's
  journal (the new blocks and the file size).
- Each record is a 12-byte header (sequence number, length) and the body, so the file can be
  read back (`records`).

`--processes N` runs N such servers on the same port with SO_REUSEPORT, each with its own log file
(`ceiling-<k>.log`), as the proxy's `workers = N` does: the kernel spreads the connections over
them. The first process listens only once the others do, so a caller that waits for its health
answer then reaches all of them. The others stop with it.

Runs on the same event loop as the proxy (`--loop`, default the proxy's default), like the bare
handler.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from aiohttp import web

from proxy.cli import new_event_loop
from proxy.config import Settings

HEADER = struct.Struct("<QI")  # sequence number (from 1), body length
ZEROS = bytes(1 << 20)


class GroupLog:
    """A log file with group commit: `await append(body)` returns once the body is on the disk."""

    def __init__(self, path: Path, size: int, on_thread: bool, grow: bool = False) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = size
        self.grow = grow
        if not grow:
            for _ in range(size // len(ZEROS)):
                os.write(self.fd, ZEROS)
            os.fsync(self.fd)
        self.offset = 0
        self.sequence = 0
        self.flushes = 0
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="flush") if on_thread else None

    async def append(self, body: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((body, future))
        self._wake.set()
        await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # one more pass: bodies already in the socket buffers join
            self._wake.clear()
            group, self._queue = self._queue, []
            parts = []
            for body, _ in group:
                self.sequence += 1
                parts += (HEADER.pack(self.sequence, len(body)), body)
            data = b"".join(parts)
            try:
                if self._thread is None:
                    self._write(data)
                else:
                    await loop.run_in_executor(self._thread, self._write, data)
            except OSError as exc:  # e.g. a full disk: those requests fail, nothing is acknowledged
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.flushes += 1
            for _, future in group:
                if not future.done():  # a client that went away cancelled its wait
                    future.set_result(None)

    def _write(self, data: bytes) -> None:
        if not self.grow and self.offset + len(data) > self.size:
            self.offset = 0  # restart at the front, as a checkpointed -wal does
        os.pwrite(self.fd, data, self.offset)
        os.fdatasync(self.fd)
        self.offset += len(data)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown()
        os.close(self.fd)


def records(path: Path) -> list[bytes]:
    """The bodies in a log file, oldest first, as far as the sequence numbers run on from 1 (a log
    that has restarted at the front is not read past its newest record)."""
    data, bodies, at = path.read_bytes(), [], 0
    while at + HEADER.size <= len(data):
        sequence, length = HEADER.unpack_from(data, at)
        if sequence != len(bodies) + 1 or at + HEADER.size + length > len(data):
            break
        bodies.append(data[at + HEADER.size:at + HEADER.size + length])
        at += HEADER.size + length
    return bodies


def make_app(log_path: Path, args: argparse.Namespace) -> web.Application:
    async def accept(request: web.Request) -> web.Response:
        body = await request.read()
        await request.app["log"].append(body)
        return web.Response(status=202)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "OK"})

    async def log_lifetime(app: web.Application):
        log = GroupLog(log_path, args.log_mib << 20, args.flush == "thread", args.grow)
        app["log"] = log
        flusher = asyncio.get_running_loop().create_task(log.run())
        yield
        flusher.cancel()
        log.close()

    app = web.Application()
    app.cleanup_ctx.append(log_lifetime)
    app.add_routes([web.post("/api/client/metrics", accept), web.get("/internal-backstage/health", health)])
    return app


def serve(folder: Path, index: int, args: argparse.Namespace, when_listening=None) -> None:
    web.run_app(make_app(folder / f"ceiling-{index}.log", args), host="127.0.0.1", port=args.port,
                reuse_port=args.processes > 1 or None, access_log=None,
                print=when_listening, loop=new_event_loop(args.loop or Settings().event_loop))


def die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--processes", type=int, default=1, help="servers on the port (SO_REUSEPORT)")
    parser.add_argument("--flush", choices=("thread", "loop"), default="thread",
                        help="where fdatasync runs (default: a helper thread)")
    parser.add_argument("--grow", action="store_true", help="append to a growing file instead of reusing one")
    parser.add_argument("--log-mib", type=int, default=64, help="size of the reused log file")
    parser.add_argument("--loop", help="event loop (default: the proxy's default)")
    parser.add_argument("--dir", type=Path, help="folder for the log files (default: a temporary one)")
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)  # a started sibling
    args = parser.parse_args()

    if args.index:
        die_with_parent()
        serve(args.dir, args.index, args, lambda _: print("listening", flush=True))
        return
    with nullcontext(str(args.dir)) if args.dir else tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        args.dir = folder = Path(tmp)
        siblings = []
        try:
            for index in range(1, args.processes):
                sibling = subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--dir", str(folder),
                                            "--index", str(index)], stdout=subprocess.PIPE, text=True)
                siblings.append(sibling)
                if sibling.stdout.readline().strip() != "listening":
                    raise SystemExit(f"ceiling server {index} did not start")
            serve(folder, 0, args)
        finally:
            for sibling in siblings:
                sibling.terminate()
            for sibling in siblings:
                sibling.wait()


if __name__ == "__main__":
    main()
