"""`metrics-proxy status`, `metrics-proxy flush --one-shot` and the forwarder's Prometheus counters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from aiohttp import web

from tests.forwarding import UPSTREAM_DEV, post_metrics
from tests.support import ADMIN_TOKEN, PROD_TOKEN, free_port


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


async def test_status_reports_pending_batches_pauses_and_dead_letters(forwarding_client, stub, clock, tmp_path):
    client = await forwarding_client(tokens={"development": UPSTREAM_DEV})

    async def answer(request, rec):
        bad = any(m["featureName"] == "bad" for m in rec.body["metrics"])
        return web.Response(status=400 if bad else 202)

    stub.default = answer
    await post_metrics(client, {"good": (2, 1), "bad": (1, 1)}, clock.now())
    await post_metrics(client, {"flag-p": (5, 0)}, clock.now(), token=PROD_TOKEN)
    await client.forwarder.flush()

    # No proxy answers on the configured port: the command reads the database file.
    result = await asyncio.to_thread(run_cli, "status", "--json", "--data-dir", str(tmp_path / "data"), env={})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source"] == "database"
    unleash = next(v for v in report["vendors"] if v["vendor"] == "unleash")
    dev, prod = (next(q for q in unleash["queues"] if q["name"] == name) for name in ("development", "production"))
    assert dev["deadLetters"] == 1 and dev["pendingPayloads"] == 0 and dev["lastSuccess"] == clock.now()
    assert (prod["pendingRows"], prod["pendingCount"], prod["lastSuccess"]) == (1, 5, None)
    assert report["status"] == "degraded" and report["degradations"][0]["cause"] == "dead_letters"

    text = await asyncio.to_thread(run_cli, "status", "--data-dir", str(tmp_path / "data"), env={})
    assert "status: DEGRADED (read from the database file" in text.stdout
    assert "dead_letters unleash/development" in text.stdout
    production = next(line for line in text.stdout.splitlines() if line.strip().startswith("production"))
    # the command's own settings have no [upstream]: with them nothing would be sent
    assert production.split()[:5] == ["production", "local", "1", "5", "0"]


async def test_flush_one_shot_sends_when_no_proxy_runs(stub, tmp_path, aiohttp_client, make_settings, clock):
    from proxy.app import create_app
    from tests.forwarding import metrics_body
    from tests.support import client_headers

    # Ingest with forwarding off (no [upstream]), then stop that app: the counts are on disk.
    app = create_app(make_settings(), clock=clock)
    client = await aiohttp_client(app)
    response = await client.post("/api/client/metrics", json=metrics_body({"flag-a": (9, 1)}, clock.now()),
                                 headers=client_headers())
    assert response.status == 202
    await client.close()

    env = {
        "METRICS_PROXY_UPSTREAM_URL": stub.url,
        "METRICS_PROXY_UPSTREAM_TOKENS": f"development={UPSTREAM_DEV}",
        "METRICS_PROXY_ADMIN_TOKENS": ADMIN_TOKEN,
    }
    args = ("flush", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()))
    refused = await asyncio.to_thread(run_cli, *args, env=env)
    assert refused.returncode == 2 and "--one-shot" in refused.stderr and not stub.received

    done = await asyncio.to_thread(run_cli, *args, "--one-shot", env=env)
    assert done.returncode == 0, done.stderr
    assert "0 batches left" in done.stdout
    [rec] = stub.delivered()
    assert [(m["featureName"], m["yes"], m["no"]) for m in rec.body["metrics"]] == [("flag-a", 9, 1)]


async def test_flush_endpoint_needs_an_admin_token(forwarding_client):
    client = await forwarding_client()
    assert (await client.post("/internal-backstage/flush")).status == 401
    response = await client.post("/internal-backstage/flush", headers={"Authorization": ADMIN_TOKEN})
    assert response.status == 200 and await response.json() == {"finished": True, "batchesLeft": 0}


async def test_prometheus_exposes_forwarder_counters(forwarding_client, stub, clock):
    client = await forwarding_client()
    stub.script = [503]
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now())
    await client.forwarder.flush()

    text = await (await client.get("/internal-backstage/prometheus")).text()
    assert 'metrics_proxy_upstream_requests_total{status="503"} 1.0' in text
    assert 'metrics_proxy_upstream_requests_total{status="202"} 1.0' in text
    assert "metrics_proxy_upstream_retries_total 1.0" in text
    assert "metrics_proxy_upstream_ambiguous_batches_total 0.0" in text
    assert "metrics_proxy_upstream_paused_environments 0.0" in text
    [line] = [x for x in text.splitlines() if x.startswith("metrics_proxy_upstream_last_success_timestamp_seconds ")]
    assert float(line.split()[1]) == clock.now()


async def test_flush_endpoint_without_upstream_is_409_with_an_error_body(make_client):
    client = await make_client()
    response = await client.post("/internal-backstage/flush", headers={"Authorization": ADMIN_TOKEN})
    assert response.status == 409
    body = await response.json()
    assert body["name"] == "NoUpstreamError" and "upstream" in body["message"] and body["id"]


def test_forwarder_options_have_defaults_and_come_from_the_environment():
    from proxy.config import load_settings

    defaults = load_settings(environ={"METRICS_PROXY_UPSTREAM_URL": "http://u/api"}).upstream
    assert (defaults.app_name, defaults.max_body_bytes, defaults.max_in_flight) == ("metrics-proxy", 95 * 1024, 4)
    assert (defaults.retry_max, defaults.auth_retry_interval, defaults.shutdown_flush_timeout) == (300, 300, 20)
    chosen = load_settings(environ={
        "METRICS_PROXY_UPSTREAM_URL": "http://u/api",
        "METRICS_PROXY_UPSTREAM_MAX_BODY_BYTES": "50000",
        "METRICS_PROXY_UPSTREAM_MAX_IN_FLIGHT": "2",
        "METRICS_PROXY_UPSTREAM_APP_NAME": "edge-sidecar",
    }).upstream
    assert (chosen.max_body_bytes, chosen.max_in_flight, chosen.app_name) == (50000, 2, "edge-sidecar")
