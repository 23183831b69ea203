"""impactMetrics in usage posts: merged durably, shown on /internal-backstage/impact/metrics,
kept in the outbox for the forwarder (also when they arrive through /bulk)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import urllib.request

import msgspec
import pytest

from proxy.api.state import STORE
from proxy.storage.journal import ImpactRow
from tests.support import PROD_TOKEN, ProxyProcess, client_headers, hour_start, iso

IMPACT_PATH = "/internal-backstage/impact/metrics"


def counter(name: str, value: float, **labels) -> dict:
    return {"name": name, "help": "requests seen", "type": "counter",
            "samples": [{"value": value, "labels": labels}]}


def gauge(name: str, value: float, **labels) -> dict:
    return {"name": name, "help": "current level", "type": "gauge", "samples": [{"value": value, "labels": labels}]}


def histogram(name: str, count: int, total: float, buckets: list[tuple[object, int]]) -> dict:
    return {"name": name, "help": "latency", "type": "histogram",
            "samples": [{"count": count, "sum": total, "buckets": [{"le": le, "count": n} for le, n in buckets]}]}


def metrics_post(impact: list, toggles: dict | None = None, at: float | None = None) -> dict:
    """A metrics post with impact metrics; with `toggles`, also a usage bucket in the first minute
    of the hour of `at` (the proxy's clock), so the 48 h retention keeps its counts."""
    body = {"appName": "web", "instanceId": "i-1", "impactMetrics": impact}
    if toggles is not None:
        assert at is not None, "a usage bucket needs a time: pass the clock's now"
        body["bucket"] = {"start": iso(hour_start(at)), "stop": iso(hour_start(at) + 60), "toggles": toggles}
    return body


async def post(client, body: dict, token: str | None = None, path: str = "/api/client/metrics") -> None:
    resp = await client.post(path, json=body, headers=client_headers(token) if token else client_headers())
    assert resp.status == 202, await resp.text()


async def impact_text(client) -> str:
    resp = await client.get(IMPACT_PATH)
    assert resp.status == 200
    return await resp.text()


def value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert m, f"{series} not in:\n{text}"
    return float(m.group(1))


async def test_counters_add_gauges_take_the_latest(client):
    await post(client, metrics_post([counter("checkout_clicks", 3, page="cart"), gauge("queue_depth", 7)]))
    await post(client, metrics_post([counter("checkout_clicks", 2, page="cart"), gauge("queue_depth", 4)]))
    text = await impact_text(client)
    assert "# TYPE checkout_clicks counter" in text
    assert value(text, 'checkout_clicks{appName="web",environment="development",page="cart"}') == 5
    assert value(text, 'queue_depth{appName="web",environment="development"}') == 4


async def test_histogram_buckets_add(client):
    buckets = [(0.1, 1), (1, 3), ("+Inf", 4)]
    await post(client, metrics_post([histogram("req_seconds", 4, 2.5, buckets)]))
    await post(client, metrics_post([histogram("req_seconds", 4, 1.5, buckets)]))
    text = await impact_text(client)
    labels = 'appName="web",environment="development"'
    assert value(text, f'req_seconds_bucket{{{labels},le="0.1"}}') == 2
    assert value(text, f'req_seconds_bucket{{{labels},le="1"}}') == 6
    assert value(text, f'req_seconds_bucket{{{labels},le="+Inf"}}') == 8
    assert value(text, f"req_seconds_count{{{labels}}}") == 8
    assert value(text, f"req_seconds_sum{{{labels}}}") == 4


async def test_histogram_with_new_bounds_starts_over(client):
    await post(client, metrics_post([histogram("h", 2, 1.0, [(1, 2), ("+Inf", 2)])]))
    await post(client, metrics_post([histogram("h", 1, 0.5, [(0.5, 1), ("+Inf", 1)])]))
    text = await impact_text(client)
    assert value(text, 'h_count{appName="web",environment="development"}') == 1
    assert 'le="1"' not in text


async def test_usage_counts_survive_a_bad_impact_metric(client, clock):
    bad = [{"name": "no_type", "samples": []}, counter("neg", -1), counter("9bad", 1), counter("good", 1),
           gauge("reserved_label", 1, __name__="x"), histogram("le_label", 1, 1.0, [(1, 1)])]
    bad[-1]["samples"][0]["labels"] = {"le": "5"}
    await post(client, metrics_post(bad, toggles={"flag-a": {"yes": 2, "no": 0}}, at=clock.now()))
    store = client.server.app[STORE]
    assert await store.totals() == [("development", "web", "flag-a", 2, 0)]
    text = await impact_text(client)
    assert value(text, 'good{appName="web",environment="development"}') == 1
    scrape = await (await client.get("/metrics")).text()
    assert 'metrics_proxy_dropped_rows_total{reason="impact_metric_invalid"} 5.0' in scrape


async def test_new_series_beyond_the_limit_are_dropped_and_counted(make_client, clock):
    client = await make_client(impact_metrics_max_series=2)
    await post(client, metrics_post([counter("a", 1), counter("b", 1)]))
    await post(client, metrics_post([counter("a", 1), counter("c", 1)], toggles={"flag-a": {"yes": 1, "no": 0}},
                                    at=clock.now()))
    await client.close()
    # The limit holds across a restart (the known series are loaded from the store).
    client = await make_client(impact_metrics_max_series=2)
    await post(client, metrics_post([counter("d", 1), counter("b", 5)]))
    text = await impact_text(client)
    assert value(text, 'a{appName="web",environment="development"}') == 2
    assert value(text, 'b{appName="web",environment="development"}') == 6
    assert "# TYPE c counter" not in text and "# TYPE d counter" not in text
    assert await client.server.app[STORE].totals() == [("development", "web", "flag-a", 1, 0)]
    scrape = await (await client.get("/metrics")).text()
    assert 'metrics_proxy_dropped_rows_total{reason="impact_series_limit"} 1.0' in scrape


async def test_bulk_impact_metrics_are_kept_not_dropped(client):
    entry = {**counter("bulk_hits", 6), "appName": "edge-app", "environment": "development"}
    await post(client, {"applications": [], "metrics": [], "impactMetrics": [entry]}, path="/api/client/metrics/bulk")
    text = await impact_text(client)
    assert value(text, 'bulk_hits{appName="edge-app",environment="development"}') == 6


async def test_environment_comes_from_the_token(client):
    await post(client, metrics_post([counter("hits", 1)]), token=PROD_TOKEN)
    text = await impact_text(client)
    assert value(text, 'hits{appName="web",environment="production"}') == 1


async def test_outbox_rows_for_the_forwarder(client):
    await post(client, metrics_post([counter("hits", 1, page="a")]))
    await post(client, metrics_post([counter("hits", 4, page="a")]))
    store = client.server.app[STORE]
    store.fold()
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT environment, app_name, name, labels, row FROM pending_impact_metrics").fetchall()
    assert len(rows) == 1
    env, app, name, labels, blob = rows[0]
    assert (env, app, name, labels) == ("development", "web", "hits", '{"page":"a"}')
    assert msgspec.msgpack.decode(blob, type=ImpactRow).value == 5
    scrape = await (await client.get("/metrics")).text()
    assert 'metrics_proxy_outbox_pending_impact_series{environment="development"} 1' in scrape.splitlines()


def test_acknowledged_impact_metrics_survive_kill_9(tmp_path):
    proxy = ProxyProcess(tmp_path / "data", extra_env={"METRICS_PROXY_FOLD_INTERVAL": "3600"}).start()
    try:
        for v in (2, 3):
            req = urllib.request.Request(
                proxy.url + "/api/client/metrics", data=json.dumps(metrics_post([counter("hits", v)])).encode(),
                headers=client_headers(), method="POST",
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 202
        proxy.kill()  # before any fold: the counts live only in the journal
        proxy.start()
        with urllib.request.urlopen(proxy.url + IMPACT_PATH, timeout=10) as resp:
            text = resp.read().decode()
        assert value(text, 'hits{appName="web",environment="development"}') == 5
    finally:
        proxy.stop()


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)")
async def test_impact_exposition_parses_with_promtool(client):
    await post(client, metrics_post([counter("clicks_total", 1), gauge("depth", 2),
                                     histogram("latency_seconds", 1, 0.2, [(0.5, 1)])]))
    text = await impact_text(client)
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    report = (result.stdout + result.stderr).decode()
    assert result.returncode in (0, 3), report  # 1 would be a parse error
    assert all("camelCase" in line for line in report.splitlines() if line.strip()), report
