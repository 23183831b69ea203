"""Instructions per ingest post, counted by callgrind: the proxy beside the bare aiohttp handler
and the durable ceiling (the bare handler plus a group-committed, fdatasynced log; one process).

Run: python -m bench.instructions [--quick]. Needs valgrind (apt-get install valgrind) and wrk.

Why a count and not a clock: on this shared 2-core VM req/s and CPU time per request move by
10-30 % from one minute to the next (wrk's own CPU per request moved from 13 to 20 us within an
hour), so a change worth 5 % cannot be seen in bench.ingest without many alternating runs. The
instructions a server executes per request do not depend on the neighbours: two runs of one tree
agree within ~1-2 %. They are user-space instructions only, so not the kernel's share (socket
sends, fsync) and not the time spent waiting: this does not replace bench.ingest, it tells whether
a change made the request path cheaper.

Each server runs under callgrind with counting off until the warm-up is done; then wrk posts
20-toggle bodies on 64 connections, as bench.ingest does, and the figure is the instructions of
every process of the server (workers included) divided by the requests answered. Under valgrind a
server runs ~50x slower, so the fold that every `fold_interval` writes the merged counts would weigh
~50x more per post than at full load (there it is ~1 %): the proxy runs with a fold interval longer
than the measurement, and the figure is the request path alone. Other timed work still weighs more
per post than at full load, most of all with `workers = 2` (the primary pulls the worker's rows
every 0.1 s, the worker checks the primary's size every few ms): read the one-process figure for
the request path, and the workers' for what the hand-over adds on top of it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

from bench.harness import cli, proxy_server, require_wrk, server, wrk
from bench.ingest import BARE_SERVER, CEILING_SERVER, lua_script, proxy_with_workers

START_SECONDS = 120.0  # importing aiohttp and friends under valgrind takes 10-30 s here
FOLD_INTERVAL = "3600"


def require_valgrind() -> str:
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is needed for this benchmark: apt-get install valgrind")
    return valgrind


def _callgrind(out: Path) -> list[str]:
    return [require_valgrind(), "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.%p"]


def _counting(on: bool) -> None:
    # Without a pid callgrind_control reaches every process running under callgrind: the server's.
    subprocess.run(["callgrind_control", "-i", "on" if on else "off"], check=True, capture_output=True)


def _instructions(out: Path) -> int:
    """The sum of every dump's `totals:` line (each process writes one file when it exits)."""
    total = 0
    for path in out.glob("callgrind.*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def measure(start: AbstractContextManager[str], out: Path, script: Path, seconds: int) -> dict:
    with start as url:
        wrk(url, "/api/client/metrics", script, 3)  # warm-up, not counted
        _counting(True)
        answered = wrk(url, "/api/client/metrics", script, seconds)
        _counting(False)
    # The server has exited here, so every process has written its counts.
    instructions = _instructions(out)
    requests = answered["requests"]
    return {"requests": requests, "instructions": instructions,
            "per_request": round(instructions / requests) if requests else None}


def run(quick: bool = False) -> dict:
    require_wrk()
    require_valgrind()
    seconds = 10 if quick else 30
    env = {"METRICS_PROXY_FOLD_INTERVAL": FOLD_INTERVAL}
    results: dict = {"seconds_per_run": seconds, "connections": 64, "toggles": 20}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        script = lua_script(Path(tmp), 20)
        servers = {
            "bare": lambda out: server([*_callgrind(out), *BARE_SERVER], None, START_SECONDS),
            "ceiling": lambda out: server([*_callgrind(out), *CEILING_SERVER], None, START_SECONDS),
            "proxy": lambda out: proxy_server(env, wrapper=_callgrind(out), start_timeout=START_SECONDS),
            "workers_2": lambda out: proxy_with_workers(2, _callgrind(out), START_SECONDS, env),
        }
        for name, start in servers.items():
            out = Path(tmp) / name
            out.mkdir()
            results[name] = measure(start(out), out, script, seconds)
    bare, ceiling = results["bare"]["per_request"], results["ceiling"]["per_request"]
    for name in ("ceiling", "proxy", "workers_2"):
        results[name]["vs_bare"] = round(results[name]["per_request"] / bare, 2)
    for name in ("proxy", "workers_2"):
        results[name]["vs_ceiling"] = round(results[name]["per_request"] / ceiling, 2)
    return results


def report(results: dict) -> None:
    bare = results["bare"]
    print(f"instructions per 20-toggle post (callgrind, {results['connections']} connections, "
          f"{results['seconds_per_run']} s under valgrind)")
    print(f"  bare aiohttp handler   {bare['per_request']:>9,}   ({bare['requests']} requests)")
    ceiling = results["ceiling"]
    print(f"  durable ceiling        {ceiling['per_request']:>9,}   {ceiling['vs_bare']:.2f}x bare   "
          f"({ceiling['requests']} requests; user space only: the flush is kernel time)")
    for name, label in (("proxy", "proxy, one process"), ("workers_2", "proxy, workers = 2")):
        row = results[name]
        print(f"  {label:<22} {row['per_request']:>9,}   {row['vs_bare']:.2f}x bare   {row['vs_ceiling']:.2f}x ceiling   "
              f"({row['requests']} requests; all processes)")


if __name__ == "__main__":
    cli("instructions", __doc__, run, report, "10 s per server instead of 30")
