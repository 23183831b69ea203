"""Shared test helpers: tokens, payload fixtures, and a real `metrics-proxy serve` subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
PAYLOADS = FIXTURES / "payloads"

CLIENT_TOKEN = "default:development.test-client-secret"
PROD_TOKEN = "default:production.test-prod-secret"
FRONTEND_TOKEN = "default:development.test-frontend-secret"
ADMIN_TOKEN = "*:*.test-admin-secret"

HOUR = 3600

# The disk reserve of the suite's proxies (disk_reserve; the tests of the reserve set their own). At
# the default, 64 MiB with the default max_db_size, the data folders of one run (pytest keeps the
# last three runs' folders) would hold over ten GB of reserve files.
TEST_DISK_RESERVE = 256 * 1024


# Times in tests are derived from the injected clock or from now, never written as calendar dates
# that age: .ci/run runs the suite with the system clock moved 400 days ahead to prove it.
def hour_start(seconds: float) -> int:
    """The start of the UTC hour that holds `seconds` (epoch seconds)."""
    return int(seconds // HOUR * HOUR)


def this_hour() -> int:
    """The start of the current hour of the system clock."""
    return hour_start(time.time())


def iso(seconds: float, fraction: str = "") -> str:
    """Whole epoch seconds as RFC 3339 UTC the way SDKs write it: iso(t) -> 'YYYY-MM-DDThh:mm:ssZ';
    `fraction` is written out as given (iso(t, '.151506186') for nanoseconds, '.000' for milliseconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + fraction + "Z"


def epoch_ms(seconds: float) -> int:
    """Epoch milliseconds, the other timestamp form SDKs send."""
    return int(round(seconds * 1000))


def client_headers(token: str = CLIENT_TOKEN) -> dict[str, str]:
    return {"Authorization": token, "Content-Type": "application/json"}


def admin_headers() -> dict[str, str]:
    return {"Authorization": ADMIN_TOKEN}


def recorded_requests(kind: str) -> list[dict]:
    """Every recorded SDK request whose file name starts with `kind` (metrics, register, features)."""
    found = []
    for path in sorted(PAYLOADS.glob(f"*-sdk-*/{kind}-*.json")):
        record = json.loads(path.read_text())
        record["file"] = f"{path.parent.name}/{path.name}"
        found.append(record)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    """Poll /internal-backstage/health until it answers; RuntimeError if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/internal-backstage/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy")


class ProxyProcess:
    """A real `python -m proxy serve` on loopback, for crash and shutdown tests."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_env: dict[str, str] | None = None,
                 config: Path | None = None, preexec_fn: Callable[[], None] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_env = extra_env or {}
        self.config = config
        self.preexec_fn = preexec_fn  # runs in the child before exec (e.g. to lower its rlimits)
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"proxy-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> ProxyProcess:
        env = dict(os.environ)
        env.update(
            METRICS_PROXY_CLIENT_TOKENS=f"{CLIENT_TOKEN},{PROD_TOKEN}",
            METRICS_PROXY_FRONTEND_TOKENS=FRONTEND_TOKEN,
            METRICS_PROXY_ADMIN_TOKENS=ADMIN_TOKEN,
            METRICS_PROXY_DISK_RESERVE=str(TEST_DISK_RESERVE),
        )
        env.update(self.extra_env)
        cmd = [sys.executable, "-m", "proxy", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.config:
            cmd += ["--config", str(self.config)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)
        try:
            wait_healthy(self.url, self.proc, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {self.log_path.read_text()[-2000:]}") from None
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def wait_for_log(proxy: ProxyProcess, text: str, count: int = 1, timeout: float = 15.0) -> None:
    """Until `text` has appeared `count` times in the proxy's log (e.g. a worker listening)."""
    deadline = time.monotonic() + timeout
    while proxy.log().count(text) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} x{count} not in the log: {proxy.log()[-2000:]}")
        time.sleep(0.05)


async def stored_yes_last_hour(url: str) -> int:
    """The yes counts a running proxy reports for the last hour, over every flag (admin read)."""
    import aiohttp

    async with aiohttp.ClientSession(headers={"Authorization": ADMIN_TOKEN}) as session:
        async with session.get(url + "/api/client/metrics/feature-toggles") as resp:
            assert resp.status == 200
            data = await resp.json()
    return sum(v["yes"] for v in data["lastHour"].values())
