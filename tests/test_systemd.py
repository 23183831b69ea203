"""The systemd unit: `systemd-analyze verify` finds nothing to say, its settings are the ones the
proxy needs, and the real proxy speaks the notify protocol (READY=1 once it serves, STOPPING=1
when SIGTERM starts the stop)."""

from __future__ import annotations

import configparser
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from proxy.cli import SHUTDOWN_SECONDS
from proxy.config import UpstreamSettings
from tests.support import ProxyProcess

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "metrics-proxy.service"


def unit_settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, by key (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_systemd_analyze_verify_is_clean(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd; .ci/run installs it)")
    # verify checks that ExecStart's program exists: point it at this checkout's entry point.
    script = Path(sys.executable).parent / "metrics-proxy"
    assert script.exists(), "the package is not installed in this environment (pip install -e .)"
    unit = tmp_path / "metrics-proxy.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/metrics-proxy", str(script)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert str(unit) not in result.stderr and unit.name not in result.stderr, result.stderr


def test_the_unit_runs_the_proxy_as_the_issue_and_the_proxy_need():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string("\n".join(line for line in UNIT.read_text().splitlines() if not line.startswith("SystemCall")))
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["DynamicUser"] == ["yes"] and settings["StateDirectory"] == ["metrics-proxy"]
    assert settings["Environment"] == ["METRICS_PROXY_DATA_DIR=/var/lib/metrics-proxy"]
    assert settings["ExecStart"] == ["/usr/local/bin/metrics-proxy serve --config /etc/metrics-proxy/proxy.toml"]
    assert settings["EnvironmentFile"][0].startswith("-/etc/metrics-proxy/")
    assert settings["ProtectSystem"] == ["strict"] and settings["NoNewPrivileges"] == ["yes"]
    assert settings["Restart"] == ["on-failure"] and settings["KillSignal"] == ["SIGTERM"]
    # The stop: in-flight requests, then the final flush; the unit must wait for both.
    final_flush = UpstreamSettings(url="http://unleash/api").shutdown_flush_timeout
    assert float(settings["TimeoutStopSec"][0]) > SHUTDOWN_SECONDS + final_flush
    assert int(settings["LimitNOFILE"][0]) >= 65536


def receive(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    return sock.recv(4096).decode()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_the_proxy_tells_systemd_when_it_is_ready_and_when_it_stops(abstract, proxies, tmp_path):
    folder = tempfile.mkdtemp(prefix="mp-notify-", dir="/tmp")  # a socket path must stay short
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            if abstract:
                name = f"metrics-proxy-test-{time.monotonic_ns()}"
                sock.bind("\0" + name)
                address = "@" + name
            else:
                address = f"{folder}/notify"
                sock.bind(address)
            proxy = ProxyProcess(tmp_path / "data", extra_env={"NOTIFY_SOCKET": address})
            proxies.append(proxy)
            proxy.start()
            assert receive(sock, 10) == "READY=1"
            with urllib.request.urlopen(proxy.url + "/internal-backstage/ready", timeout=5) as response:
                assert response.status == 200  # ready when it said so
            proxy.proc.send_signal(signal.SIGTERM)
            assert receive(sock, 10) == "STOPPING=1"
            assert proxy.proc.wait(30) == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_without_notify_socket_nothing_is_sent_and_serving_works(proxies, tmp_path):
    proxy = ProxyProcess(tmp_path / "data")
    proxies.append(proxy)
    proxy.start()
    assert proxy.terminate() == 0
    assert "could not notify systemd" not in proxy.log()
