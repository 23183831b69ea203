"""Shutdown of a real proxy process: a second SIGTERM while the first one's final flush is still
running ends the process promptly (it must never hang), and no acknowledged count is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    ProxyProcess,
    epoch_ms,
    free_port,
    wait_healthy,
)


def post_metrics(url: str, yes: int) -> int:
    now = time.time()  # the proxy process runs on the same (possibly shifted) system clock
    body = {"appName": "app", "bucket": {"start": epoch_ms(now - 1), "stop": epoch_ms(now),
                                         "toggles": {"flag": {"yes": yes, "no": 0}}}}
    req = urllib.request.Request(url + "/api/client/metrics", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": CLIENT_TOKEN, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def last_hour_yes(url: str) -> int:
    req = urllib.request.Request(url + "/api/client/metrics/feature-toggles", headers={"Authorization": ADMIN_TOKEN})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["lastHour"]["flag"]["yes"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_during_the_final_flush_exits_promptly_and_loses_nothing(tmp_path, signum):
    nothing_listens = free_port()  # the upstream is down: the final flush keeps retrying
    proxy = ProxyProcess(tmp_path / "data", extra_env={
        "METRICS_PROXY_UPSTREAM_URL": f"http://127.0.0.1:{nothing_listens}/api",
        "METRICS_PROXY_UPSTREAM_TOKENS": "development=default:development.upstream",
        "METRICS_PROXY_UPSTREAM_RETRY_MAX": "0.2",
    })
    try:
        proxy.start()
        assert post_metrics(proxy.url, 5) == 202
        assert post_metrics(proxy.url, 7) == 202
        proxy.proc.send_signal(signum)
        time.sleep(1.0)  # inside the final flush (up to 20 s against a dead upstream)
        assert proxy.proc.poll() is None
        started = time.monotonic()
        proxy.proc.send_signal(signum)
        proxy.proc.wait(10)
        assert time.monotonic() - started < 10

        proxy.start()  # the acknowledged counts were replayed from the journal
        assert last_hour_yes(proxy.url) == 12
        assert proxy.terminate() == 0  # one SIGTERM: a clean stop, exit 0
        assert "every acknowledged count is on disk" in proxy.log()
    finally:
        proxy.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_one_signal_stops_gracefully_with_exit_status_0(tmp_path, signum):
    """SIGINT (Ctrl-C, `docker stop` of an image whose STOPSIGNAL is SIGINT) takes the same graceful
    path as SIGTERM: the store closes after the last commit, and a restart finds every count."""
    proxy = ProxyProcess(tmp_path / "data")
    try:
        proxy.start()
        assert post_metrics(proxy.url, 4) == 202
        proxy.proc.send_signal(signum)
        assert proxy.proc.wait(30) == 0
        assert "every acknowledged count is on disk" in proxy.log()
        assert "Traceback" not in proxy.log() and "KeyboardInterrupt" not in proxy.log()
        proxy.start()
        assert last_hour_yes(proxy.url) == 4
    finally:
        proxy.stop()


def test_sigterm_to_a_wrapper_and_the_proxy_never_hangs_the_process(tmp_path):
    """`pkill -f` of a proxy started under `timeout` signals both: the proxy gets SIGTERM itself and
    again from the wrapper, moments later. Whichever part of the shutdown the second lands in, the
    process exits promptly, and what it acknowledged is there at the next start. (Before the fix,
    an aiosqlite reader thread left open by the cut-short cleanup kept such a process alive.)"""
    data = tmp_path / "data"
    acknowledged = 0
    for attempt in range(6):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, METRICS_PROXY_CLIENT_TOKENS=CLIENT_TOKEN, METRICS_PROXY_ADMIN_TOKENS=ADMIN_TOKEN)
        wrapper = subprocess.Popen(
            ["timeout", "120", sys.executable, "-m", "proxy", "serve", "--port", str(port), "--data-dir", str(data)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(url, wrapper)
            if attempt % 2:
                assert post_metrics(url, attempt) == 202
                acknowledged += attempt
            proxy_pid = int(subprocess.check_output(["pgrep", "-P", str(wrapper.pid)]).split()[0])
            os.kill(wrapper.pid, signal.SIGTERM)
            os.kill(proxy_pid, signal.SIGTERM)
            wrapper.wait(15)  # timeout exits when the proxy does; raises if the proxy hangs
        finally:
            if wrapper.poll() is None:
                subprocess.run(["pkill", "-9", "-P", str(wrapper.pid)])
                wrapper.kill()
    proxy = ProxyProcess(data)
    try:
        proxy.start()
        assert last_hour_yes(proxy.url) == acknowledged
    finally:
        proxy.stop()

