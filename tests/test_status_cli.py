"""`metrics-proxy status` prints the document of GET /internal-backstage/status: asked of a real
running proxy (the same bytes the page reads), and built by the same code from the data folder when
no proxy answers."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.forwarding import metrics_body
from tests.ld_support import HEADERS, LD_TOKEN, custom_metric
from tests.support import ADMIN_TOKEN, ProxyProcess, client_headers, free_port
from tests.test_forwarder_cli import run_cli


def call(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def without_clock(doc: dict) -> dict:
    """The document less what moves with the wall clock between two reads."""
    doc = json.loads(json.dumps(doc))
    doc.pop("generatedAt")
    # the 60 minutes move on at a minute's turn: compared by their total
    doc["ingestPerMinute"] = sum(m["evaluations"] for m in doc["ingestPerMinute"])
    for vendor in doc["vendors"]:
        vendor["ingestPerMinute"] = sum(m["evaluations"] for m in vendor["ingestPerMinute"])
        for q in vendor["queues"]:
            q.pop("oldestPendingAge")
    return doc


@pytest.fixture
def proxy(tmp_path):
    env = {"METRICS_PROXY_LAUNCHDARKLY_ACCESS_TOKENS": LD_TOKEN, "METRICS_PROXY_FOLD_INTERVAL": "0.2"}
    running = ProxyProcess(tmp_path / "data", port=free_port(), extra_env=env).start()
    yield running
    running.stop()


def test_the_command_prints_what_the_running_proxy_serves(proxy, tmp_path):
    now = time.time()
    assert call(proxy.url + "/api/client/metrics", "POST", metrics_body({"flag-a": (4, 1)}, now),
                client_headers())[0] == 202
    assert call(proxy.url + "/api/v2/metrics/proj", "POST", custom_metric("m"), HEADERS)[0] == 201
    env = {"METRICS_PROXY_PORT": str(proxy.port), "METRICS_PROXY_ADMIN_TOKENS": ADMIN_TOKEN}
    result = run_cli("status", "--json", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    served = json.loads(call(proxy.url + "/internal-backstage/status", headers={"Authorization": ADMIN_TOKEN})[1])
    assert printed["source"] == "proxy"
    assert without_clock(printed) == without_clock(served)
    unleash = next(v for v in printed["vendors"] if v["vendor"] == "unleash")
    assert unleash["topFlags"] == [{"name": "flag-a", "evaluations": 5}]
    assert sum(m["evaluations"] for m in printed["ingestPerMinute"]) == 5

    text = run_cli("status", "--data-dir", str(tmp_path / "data"), env=env)
    assert text.returncode == 0, text.stderr
    assert "status: HEALTHY (from the running proxy" in text.stdout
    assert "top flags, last hour: flag-a 5" in text.stdout
    assert ADMIN_TOKEN not in text.stdout and LD_TOKEN not in text.stdout

    # a wrong token is the proxy's 403, not a silent read of the file
    refused = run_cli("status", "--data-dir", str(tmp_path / "data"),
                      env={**env, "METRICS_PROXY_ADMIN_TOKENS": "*:*.wrong"})
    assert refused.returncode == 2 and "403" in refused.stderr


def test_with_no_proxy_the_command_reads_the_data_folder(proxy, tmp_path):
    now = time.time()
    assert call(proxy.url + "/api/client/metrics", "POST", metrics_body({"flag-b": (2, 2)}, now),
                client_headers())[0] == 202
    proxy.terminate()
    env = {"METRICS_PROXY_PORT": str(free_port())}
    result = run_cli("status", "--json", "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == "database" and doc["status"] == "healthy"
    unleash = next(v for v in doc["vendors"] if v["vendor"] == "unleash")
    assert unleash["topFlags"] == [{"name": "flag-b", "evaluations": 4}]
    assert [q["name"] for q in unleash["queues"]] == ["development"]
    assert unleash["queues"][0]["pendingCount"] == 4 and unleash["queues"][0]["state"] == "local"


def test_no_database_and_no_proxy_is_an_error(tmp_path):
    result = run_cli("status", "--data-dir", str(tmp_path / "none"), env={"METRICS_PROXY_PORT": str(free_port())})
    assert result.returncode == 2 and "no database" in result.stderr
