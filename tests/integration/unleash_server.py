"""A real Unleash server (npm `unleash-server`) on a private PostgreSQL cluster, on loopback only.

Used by the integration tests (tests/integration/conftest.py) and by benchmarks
(bench/peer_unleash.py). Plain Python, no pytest: a missing tool raises `ToolMissing`, which the
test fixture turns into a skip.

Timings that shape the tests (read from Unleash 7.5.1's source, observed on 7.5.1 and 8.2.0):
- usage for a flag name that is not in the database is dropped; the list of names is cached
  for 10 s, so flags are created before the first metric is posted;
- accepted usage is buffered in memory and written to PostgreSQL every 5 s, so reads poll.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_port

UNLEASH_VERSION = "8.2.0"  # the current release (2026-09); the read shapes still follow 7.5.1 answers (tests/fixtures)
REPO_ROOT = Path(__file__).resolve().parents[2]
# Outside git (see .gitignore); reused by every later run, since the install takes about a minute.
DEFAULT_CACHE = REPO_ROOT / ".cache" / "unleash-server"
LAUNCHER = Path(__file__).with_name("unleash_launcher.mjs")

ADMIN_TOKEN = "*:*.unleash-it-admin-secret"
CLIENT_TOKEN = "default:development.unleash-it-client-secret"
DB_USER = "unleash"
DB_NAME = "unleash"


class ToolMissing(RuntimeError):
    """Node, npm or PostgreSQL is not available here: the caller should skip, not fail."""


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def find_node() -> tuple[str, str]:
    """Paths of node and npm; Unleash 7 needs Node 20 or newer."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise ToolMissing("node/npm not found on PATH (CI installs them: apt-get install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major = int(version.strip().lstrip("v").split(".")[0])
    if major < 20:
        raise ToolMissing(f"unleash-server {UNLEASH_VERSION} needs Node >= 20, found {version.strip()}")
    return node, npm


def find_postgres_bin() -> Path:
    """The folder with initdb/postgres/createdb: Debian keeps them off PATH, per major version."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve())
    for initdb in candidates:
        if (initdb.parent / "postgres").exists() and (initdb.parent / "createdb").exists():
            return initdb.parent
    raise ToolMissing("PostgreSQL server binaries not found (CI installs them: apt-get install postgresql)")


def install_unleash(cache_dir: Path = DEFAULT_CACHE, timeout: float = 600) -> Path:
    """npm-install unleash-server into cache_dir once; later calls reuse it. Returns cache_dir."""
    installed = cache_dir / "node_modules" / "unleash-server" / "package.json"
    if installed.exists() and json.loads(installed.read_text()).get("version") == UNLEASH_VERSION:
        return cache_dir
    _, npm = find_node()
    # Install beside the cache and rename at the end, so an interrupted install is never reused.
    partial = cache_dir.with_name(f"{cache_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "package.json").write_text('{"name": "unleash-it-cache", "private": true}\n')
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", f"unleash-server@{UNLEASH_VERSION}"],
        cwd=partial, capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ToolMissing(f"npm install unleash-server@{UNLEASH_VERSION} failed: {result.stderr[-1500:]}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    partial.rename(cache_dir)
    return cache_dir


def _wait(what: str, ready, timeout: float, log: Path, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen | None, sig: int, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class PostgresCluster:
    """A throw-away cluster in a temp folder, listening on 127.0.0.1 only, trust auth.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.
    Durability is off (fsync, full_page_writes): the data lives for one test session.
    """

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            try:
                shutil.chown(root, user=self._user)
            except LookupError:
                raise ToolMissing("running as root needs a 'postgres' user (the postgresql package creates it)") from None

    def _run(self, *args: str) -> None:
        result = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], user=self._user,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout[-1000:]}{result.stderr[-1500:]}")

    def _accepts_connections(self) -> bool:
        probe = subprocess.run([str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                               capture_output=True)
        return probe.returncode == 0

    def start(self, timeout: float = 60) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        log = open(self.log, "ab")
        if self._user:
            shutil.chown(self.log, user=self._user)
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.data),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            user=self._user, stdout=log, stderr=subprocess.STDOUT,
        )
        _wait("postgres", self._accepts_connections, timeout, self.log, self.proc)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER, DB_NAME)
        return self

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT)  # SIGINT = fast shutdown


@dataclass
class Usage:
    """One app's usage of one flag, summed over the hours Unleash returned."""

    yes: int = 0
    no: int = 0
    variants: dict[str, int] = field(default_factory=dict)


class UnleashServer:
    """unleash-server started through the launcher script, with tokens created at first start."""

    def __init__(self, install_dir: Path, db: PostgresCluster, root: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.install_dir = install_dir
        self.db = db
        self.port = free_port()
        self.log = root / "unleash.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def start(self, timeout: float = 180) -> UnleashServer:
        node, _ = find_node()
        env = dict(os.environ)
        env.update(
            UNLEASH_INSTALL_DIR=str(self.install_dir),
            UNLEASH_DB_PORT=str(self.db.port), UNLEASH_DB_USER=DB_USER, UNLEASH_DB_NAME=DB_NAME,
            UNLEASH_HTTP_PORT=str(self.port),
            INIT_ADMIN_API_TOKENS=ADMIN_TOKEN, INIT_CLIENT_API_TOKENS=CLIENT_TOKEN,
            CHECK_VERSION="false", SEND_TELEMETRY="false", NODE_ENV="production",
        )
        env.update(self.extra_env)
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([node, str(LAUNCHER)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.install_dir)
        _wait("unleash", self._healthy, timeout, self.log, self.proc)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)

    def request(self, method: str, path: str, body: object = None, token: str = ADMIN_TOKEN) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def create_flags(self, names: Iterable[str]) -> None:
        for name in names:
            status, body = self.request("POST", "/api/admin/projects/default/features",
                                        {"name": name, "type": "release"})
            if status not in (200, 201):
                raise RuntimeError(f"creating flag {name}: {status} {body[:500]!r}")

    def usage(self, flag: str, hours_back: int = 2) -> dict[str, Usage]:
        """Per app, the flag's counts from the raw endpoint. Rows are hour-stamped and the
        endpoint filters on `timestamp >= now() - hoursBack`, so hoursBack=1 would hide the
        previous hour right after an hour boundary; 2 covers a test that straddles one."""
        status, body = self.request("GET", f"/api/admin/client-metrics/features/{flag}/raw?hoursBack={hours_back}")
        if status != 200:
            raise RuntimeError(f"raw usage of {flag}: {status} {body[:500]!r}")
        totals: dict[str, Usage] = {}
        for row in json.loads(body)["data"]:
            if not (row["yes"] or row["no"]):
                continue  # the endpoint zero-fills every hour x app
            total = totals.setdefault(row["appName"], Usage())
            total.yes += row["yes"]
            total.no += row["no"]
            for variant, count in (row.get("variants") or {}).items():
                total.variants[variant] = total.variants.get(variant, 0) + count
        return totals


@dataclass
class UnleashStack:
    server: UnleashServer
    db: PostgresCluster
    started_in: float  # seconds from nothing (cache warm) to a healthy server with flags


@contextmanager
def unleash_stack(flags: Iterable[str] = (), extra_env: dict[str, str] | None = None,
                  cache_dir: Path = DEFAULT_CACHE) -> Iterator[UnleashStack]:
    """PostgreSQL + Unleash, with `flags` created before anything is counted; torn down on exit.
    Raises ToolMissing when Node, npm or PostgreSQL is absent."""
    bin_dir = find_postgres_bin()
    find_node()
    install_dir = install_unleash(cache_dir)
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="unleash-it-"))
    db = server = None
    try:
        db = PostgresCluster(bin_dir, root)
        server = UnleashServer(install_dir, db, root, extra_env)
        db.start()
        server.start()
        server.create_flags(flags)
        yield UnleashStack(server, db, time.monotonic() - began)
    finally:
        if server is not None:
            server.stop()
        if db is not None:
            db.stop()
        shutil.rmtree(root, ignore_errors=True)
