"""The Prometheus endpoint: per-flag usage from the store, outbox gauges, HTTP metrics, promtool."""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import subprocess

import pytest

from proxy.storage.migrations import MIGRATIONS, migrate
from tests.scrape_support import metrics_body, samples
from tests.support import ADMIN_TOKEN, HOUR, PROD_TOKEN, client_headers, hour_start


async def scrape(client, path: str = "/internal-backstage/prometheus") -> str:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return await resp.text()


async def post(client, body: dict, token: str | None = None) -> None:
    headers = client_headers(token) if token else client_headers()
    resp = await client.post("/api/client/metrics", json=body, headers=headers)
    assert resp.status == 202, await resp.text()


async def test_feature_toggle_usage_sums_posts_across_environments(client):
    await post(client, metrics_body("web", {"flag-a": (3, 1), "flag-b": (0, 2)}))
    await post(client, metrics_body("web", {"flag-a": (2, 0)}), token=PROD_TOKEN)
    await post(client, metrics_body("worker", {"flag-a": (1, 1)}))
    usage = samples(await scrape(client), "feature_toggle_usage_total")
    assert usage == {
        '{appName="web",toggle="flag-a",active="true"}': 5,
        '{appName="web",toggle="flag-a",active="false"}': 1,
        '{appName="web",toggle="flag-b",active="true"}': 0,
        '{appName="web",toggle="flag-b",active="false"}': 2,
        '{appName="worker",toggle="flag-a",active="true"}': 1,
        '{appName="worker",toggle="flag-a",active="false"}': 1,
    }


async def test_usage_totals_survive_a_restart(make_client):
    first = await make_client()
    await post(first, metrics_body("web", {"flag-a": (4, 0)}))
    await first.close()
    second = await make_client()
    await post(second, metrics_body("web", {"flag-a": (1, 0)}))
    usage = samples(await scrape(second), "feature_toggle_usage_total")
    assert usage['{appName="web",toggle="flag-a",active="true"}'] == 5


async def test_upgrade_fills_usage_totals_from_stored_hours(make_client, make_settings, clock):
    # A database written before usage_totals existed: its hourly counts must show on the scrape.
    before = next(i for i, sql in enumerate(MIGRATIONS) if "CREATE TABLE usage_totals" in sql)
    hour = hour_start(clock.now())
    path = make_settings().database_path
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        migrate(db, target=before)
        db.executemany(
            "INSERT INTO hourly_counts VALUES (?, ?, ?, ?, ?, ?, NULL)",
            [("development", "web", "old-flag", hour - HOUR, 7, 1), ("production", "web", "old-flag", hour, 3, 0)],
        )
    client = await make_client()
    usage = samples(await scrape(client), "feature_toggle_usage_total")
    assert usage == {
        '{appName="web",toggle="old-flag",active="true"}': 10,
        '{appName="web",toggle="old-flag",active="false"}': 1,
    }


async def test_usage_series_are_capped_busiest_first(make_client):
    client = await make_client(prometheus_max_usage_series=2)
    await post(client, metrics_body("web", {"quiet": (1, 0), "busy": (50, 0), "middle": (10, 0)}))
    text = await scrape(client)
    toggles = {re.search(r'toggle="([^"]+)"', k).group(1) for k in samples(text, "feature_toggle_usage_total")}
    assert toggles == {"busy", "middle"}
    assert samples(text, "metrics_proxy_usage_series_left_out") == {"": 1}


async def test_label_values_are_escaped(client):
    await post(client, metrics_body('say "hi"\\now', {"flag\nx": (1, 0)}))
    usage = samples(await scrape(client), "feature_toggle_usage_total")
    assert '{appName="say \\"hi\\"\\\\now",toggle="flag\\nx",active="true"}' in usage


async def test_outbox_gauges_per_environment(client, clock):
    two_hours_ago = clock.now() - 2 * HOUR
    await post(client, metrics_body("web", {"flag-a": (3, 1), "flag-b": (1, 0)}, at=two_hours_ago))
    await post(client, metrics_body("web", {"flag-a": (2, 0)}, at=clock.now()), token=PROD_TOKEN)
    text = await scrape(client)
    assert samples(text, "metrics_proxy_outbox_pending_rows") == {
        '{environment="development"}': 2, '{environment="production"}': 1,
    }
    assert samples(text, "metrics_proxy_outbox_pending_counts") == {
        '{environment="development"}': 5, '{environment="production"}': 2,
    }
    # Rows are filed under the hour of bucket.stop (2 h 30 min before the clock); the age counts from it.
    ages = samples(text, "metrics_proxy_outbox_oldest_pending_age_seconds")
    assert ages['{environment="development"}'] == pytest.approx(clock.now() - hour_start(two_hours_ago))
    assert ages['{environment="production"}'] == pytest.approx(clock.now() - hour_start(clock.now()))
    assert samples(text, "metrics_proxy_database_size_bytes")[""] > 0


async def test_http_requests_counted_by_route_and_status(client):
    await post(client, metrics_body("web", {"flag-a": (1, 0)}))
    bad = await client.post("/api/client/metrics", data=b"{", headers=client_headers())
    assert bad.status == 400
    await client.get("/no/such/path")
    await client.request("PROPFIND", "/no/such/path")  # a method llhttp parses
    text = await scrape(client, "/metrics")
    requests = samples(text, "metrics_proxy_http_requests_total")
    # prometheus_client writes label names in alphabetical order.
    assert requests['{method="POST",route="/api/client/metrics",status="202"}'] == 1
    assert requests['{method="POST",route="/api/client/metrics",status="400"}'] == 1
    assert requests['{method="GET",route="unmatched",status="404"}'] == 1
    assert requests['{method="other",route="unmatched",status="404"}'] == 1  # label values stay bounded
    durations = samples(text, "metrics_proxy_http_request_duration_seconds_count")
    assert durations['{route="/api/client/metrics"}'] == 2
    assert samples(text, "metrics_proxy_http_request_bytes_total")['{route="/api/client/metrics"}'] > 100


async def test_ingest_families_count_commits(client):
    await asyncio.gather(*(post(client, metrics_body("web", {"f": (1, 0)})) for _ in range(5)))
    text = await scrape(client)
    assert samples(text, "metrics_proxy_ingest_counts_total") == {"": 5}
    commits = samples(text, "metrics_proxy_sqlite_commits_total")[""]
    assert 1 <= commits <= 5
    assert samples(text, "metrics_proxy_group_commit_size_count") == {"": commits}
    durations = samples(text, "metrics_proxy_sqlite_commit_duration_seconds_bucket")
    assert durations['{le="+Inf"}'] == commits
    assert samples(text, "metrics_proxy_sqlite_commit_duration_seconds_sum")[""] > 0


async def test_folds_are_counted_and_timed(client):
    await post(client, metrics_body("web", {"f": (1, 0)}))
    before = samples(await scrape(client), "metrics_proxy_folds_total")[""]
    await post(client, metrics_body("web", {"f": (1, 0)}))
    await client.get("/api/client/metrics/feature-toggles", headers={"Authorization": ADMIN_TOKEN})  # reads fold
    text = await scrape(client)
    folds = samples(text, "metrics_proxy_folds_total")[""]
    assert folds > before
    assert samples(text, "metrics_proxy_fold_duration_seconds_bucket")['{le="+Inf"}'] == folds
    assert samples(text, "metrics_proxy_fold_duration_seconds_sum")[""] > 0


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)")
async def test_scrape_passes_promtool_check_metrics(client):
    await post(client, metrics_body("web", {"flag-a": (3, 1)}))
    await post(client, metrics_body("web", {"flag-a": (1, 0)}), token=PROD_TOKEN)
    await client.post("/api/client/metrics", data=b"{", headers=client_headers())
    custom = {"metrics": [
        {"name": "checkout_requests_total", "value": 7, "labels": {"app_name": "web"}},
        {"name": "queue_depth", "value": 2.5},
    ]}
    assert (await client.post("/api/client/metrics/custom", json=custom, headers=client_headers())).status == 202
    text = await scrape(client)
    assert "checkout_requests_total" in text and "feature_toggle_usage_total" in text
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    report = (result.stdout + result.stderr).decode()
    # Exit 1 is a parse error. Exit 3 lists lint problems: the only one allowed is the camelCase
    # label `appName` that Unleash and Unleash Edge give feature_toggle_usage_total (dashboards
    # query it by that name).
    assert result.returncode in (0, 3), report
    problems = [line for line in report.splitlines() if line.strip()]
    allowed = "feature_toggle_usage_total label names should be written in 'snake_case' not 'camelCase'"
    assert all(line == allowed for line in problems), report


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)")
def test_promtool_rejects_a_broken_exposition():
    # The check above means something only if promtool fails on bad text.
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=b"bad metric{ 1\n", capture_output=True, timeout=60)
    assert result.returncode == 1
