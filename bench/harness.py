"""Shared benchmark plumbing: servers in subprocesses, wrk as the load process, result files."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tests.support import wait_healthy  # one health poll for tests and benchmarks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def settle_disk() -> None:
    """Write a benchmark's fill out to disk before the proxy starts on it. Fills run with
    `synchronous = OFF`, so the file's pages sit dirty in the page cache, and the proxy's first
    fsync of the database (its first checkpoint) would flush all of them: measured, one read of
    0.4-1 s in the reads benchmark, which timed the fill and not the proxy."""
    os.sync()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(cmd: list[str], env: dict[str, str] | None = None, start_timeout: float = 15.0):
    """Run a server command (with {port} substituted) and yield its base URL."""
    port = free_port()
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.Popen([c.format(port=port) for c in cmd], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, start_timeout)
        yield url
    finally:
        stop(proc, 30)


def stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM (the server's clean shutdown), SIGKILL after `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def proxy_server(extra_env: dict[str, str] | None = None, workdir: Path | None = None,
                 wrapper: list[str] | None = None, start_timeout: float = 15.0):
    """The proxy on its embedded default; `wrapper` runs it under another program (valgrind)."""
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        data = Path(workdir or tmp) / "data"
        cmd = [*(wrapper or []), sys.executable, "-m", "proxy", "serve", "--auth", "open", "--port", "{port}",
               "--data-dir", str(data), "--log-level", "WARNING"]
        with server(cmd, extra_env, start_timeout) as url:
            yield url


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is needed for this benchmark: apt-get install wrk")
    return wrk


def wrk(url: str, path: str, script: Path, seconds: int, connections: int = 64) -> dict:
    """Run wrk and return req/s and latency percentiles in ms."""
    out = subprocess.run(
        [require_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url + path],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        lat[f"p{pct}_ms"] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "requests": requests, **lat, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else ""}


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def cli(name: str, doc: str | None, run, report, quick_help: str, add_arguments=None) -> None:
    """`python -m bench.<name> [--quick] [...]`: run, print the report, save the JSON. Options that
    add_arguments declares are passed to run() by name."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if add_arguments is not None:
        add_arguments(parser)
    results = run(**vars(parser.parse_args()))
    report(results)
    print("saved", save(name, results))
