"""`metrics-proxy health` / `ready` against a real proxy process, as a container probe runs them."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from proxy.storage.migrations import LATEST
from tests.support import ProxyProcess, free_port


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def proxy(tmp_path):
    process = ProxyProcess(tmp_path / "data")
    yield process
    process.stop()


def test_health_and_ready_exit_zero_on_a_serving_proxy(proxy):
    proxy.start()
    health = run_cli("health", "--port", str(proxy.port))
    assert health.returncode == 0, health.stderr
    assert '"OK"' in health.stdout
    ready = run_cli("ready", "--url", proxy.url)
    assert ready.returncode == 0, ready.stderr
    assert '"READY"' in ready.stdout


def test_ready_exits_one_when_the_database_cannot_be_used(proxy):
    proxy.data_dir.mkdir(parents=True)
    with sqlite3.connect(proxy.data_dir / "metrics-proxy.db") as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
    proxy.start()
    assert run_cli("health", "--port", str(proxy.port)).returncode == 0
    ready = run_cli("ready", "--port", str(proxy.port))
    assert ready.returncode == 1
    assert "NOT_READY" in ready.stderr


def test_both_exit_one_when_nothing_listens():
    port = str(free_port())
    for check in ("health", "ready"):
        result = run_cli(check, "--port", port, "--timeout", "2")
        assert result.returncode == 1
        assert "unreachable" in result.stderr
