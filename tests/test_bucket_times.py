"""When counts belong (issue 17, part C): one rule for bucket times, on every ingest path and read.

The rule (docs/limits.md): a count belongs to the hour of its bucket's stop, a bulk row's to the hour
of its timestamp, as Unleash files them. That time must lie within the 48 hours Unleash keeps hourly
usage for, either side of the proxy's clock: an older one is refused (Unleash would delete it at its
next sweep), and so is one further ahead. Counts cannot come from later than their receipt, so a
stop ahead of the clock (a skewed SDK clock) counts at the moment it was received. The read
endpoints answer by the same time: hourly reads by its hour, `lastHour`/`lastMinute` by the minute
it was received but never later than its own hour.

Times come from the clock fixture; nothing here names a date."""

from __future__ import annotations

import pytest

from proxy.api.state import STORE
from proxy.storage.usage.retention import RetentionPolicy
from tests.reads_support import post
from tests.scrape_support import samples
from tests.support import admin_headers, client_headers, epoch_ms, hour_start, iso

HOUR = 3600
WINDOW = 48 * HOUR


def metrics(stop: float, yes: int = 1, flag: str = "flag-a") -> dict:
    return {"appName": "app", "instanceId": "i-1",
            "bucket": {"start": iso(stop - 60), "stop": iso(stop), "toggles": {flag: {"yes": yes, "no": 0}}}}


def bulk(timestamp: float | None, yes: int = 1, flag: str = "flag-a") -> dict:
    row = {"featureName": flag, "appName": "app", "environment": "development", "yes": yes, "no": 0}
    if timestamp is not None:
        row["timestamp"] = epoch_ms(timestamp)
    return {"applications": [], "metrics": [row]}


async def _refused(client, path: str, body: dict) -> str:
    resp = await client.post(path, json=body, headers=client_headers())
    assert resp.status == 400, (resp.status, await resp.text())
    error = await resp.json()
    assert error["name"] == "BadDataError"
    return error["details"][0]["path"]


async def _raw(client, flag: str = "flag-a", hours_back: int = 48) -> dict[str, int]:
    """{hour (ISO): yes} of the raw usage answer, hours with counts only."""
    resp = await client.get(f"/api/admin/client-metrics/features/{flag}/raw?hoursBack={hours_back}",
                            headers=admin_headers())
    assert resp.status == 200
    return {row["timestamp"]: row["yes"] for row in (await resp.json())["data"] if row["yes"]}


async def _summary(client, flag: str = "flag-a") -> dict[str, int]:
    resp = await client.get(f"/api/admin/client-metrics/features/{flag}", headers=admin_headers())
    assert resp.status == 200
    return {row["timestamp"]: row["yes"] for row in (await resp.json())["lastHourUsage"]}


async def _windows(client) -> dict:
    resp = await client.get("/api/client/metrics/feature-toggles", headers=admin_headers())
    assert resp.status == 200
    return await resp.json()


def _hour_iso(seconds: float) -> str:
    return iso(hour_start(seconds), ".000")


@pytest.mark.parametrize("offset", [-WINDOW - HOUR, -365 * 24 * HOUR, WINDOW + 60, 365 * 24 * HOUR],
                         ids=["49 hours ago", "a year ago", "48 hours and a minute ahead", "a year ahead"])
async def test_a_bucket_outside_the_window_is_refused_on_every_path(client, clock, offset):
    at = clock.now() + offset
    assert await _refused(client, "/api/client/metrics", metrics(at)) == "bucket.stop"
    resp = await client.post("/api/frontend/client/metrics", json=metrics(at),
                             headers=client_headers("default:development.test-frontend-secret"))
    assert resp.status == 400 and (await resp.json())["details"][0]["path"] == "bucket.stop"
    body = bulk(clock.now())
    body["metrics"].append(bulk(at)["metrics"][0])
    assert await _refused(client, "/api/client/metrics/bulk", body) == "metrics[1].timestamp"
    assert await client.app[STORE].totals() == []  # a refused body keeps none of its rows


async def test_the_years_one_and_9999_are_refused(client):
    for millis in (-62_135_596_800_000, 253_402_300_799_999):
        body = {"appName": "app", "bucket": {"start": millis, "stop": millis, "toggles": {"f": {"yes": 1}}}}
        assert await _refused(client, "/api/client/metrics", body) == "bucket.stop"
        row = {"featureName": "f", "appName": "app", "environment": "development", "timestamp": millis, "yes": 1}
        assert await _refused(client, "/api/client/metrics/bulk", {"applications": [], "metrics": [row]}) \
            == "metrics[0].timestamp"


async def test_the_oldest_hour_kept_is_accepted_and_read(client, clock):
    # The 48 hours hoursBack=48 answers (the current one included), as Unleash deletes an hourly row
    # once its hour began 48 hours ago.
    oldest = hour_start(clock.now()) - 47 * HOUR
    await post(client, "/api/client/metrics", metrics(oldest + 1, yes=3))
    await post(client, "/api/client/metrics/bulk", bulk(oldest, yes=4, flag="flag-b"))
    assert await client.app[STORE].totals() == [("development", "app", "flag-a", 3, 0),
                                                ("development", "app", "flag-b", 4, 0)]
    assert await _raw(client) == {_hour_iso(oldest): 3}
    assert await _raw(client, "flag-b") == {_hour_iso(oldest): 4}
    # a second earlier is the hour before: one Unleash no longer keeps
    assert await _refused(client, "/api/client/metrics", metrics(oldest - 1)) == "bucket.stop"
    assert await _refused(client, "/api/client/metrics/bulk", bulk(oldest - 1)) == "metrics[0].timestamp"


async def test_a_stop_ahead_of_the_clock_counts_at_receipt(client, clock):
    """Before: filed two hours ahead, it was missing from raw usage, the summary showed that future
    hour as the last hour, and the row outlived the 48 h retention by two hours."""
    now = clock.now()
    await post(client, "/api/client/metrics", metrics(now + 2 * HOUR, yes=5))
    await post(client, "/api/client/metrics/bulk", bulk(now + 2 * HOUR, yes=7))
    this_hour = _hour_iso(now)
    assert await _raw(client) == {this_hour: 12}
    assert await _summary(client) == {this_hour: 12}

    clock.advance(WINDOW + HOUR)  # the receipt hour is 48 h old: the next pruning takes it
    deleted = await client.app[STORE].prune(RetentionPolicy(), clock.now())
    assert deleted["hourly_counts"] == 1
    assert await _raw(client) == {}


async def test_last_hour_and_last_minute_count_by_bucket_time(client, clock):
    """Before: both windows counted by the minute of receipt, so a bucket that stopped hours ago
    (or a bulk row of an hour long past) showed as used in the last hour and the last minute."""
    now = clock.now()
    await post(client, "/api/client/metrics", metrics(now - 3 * HOUR, yes=2, flag="old-bucket"))
    await post(client, "/api/client/metrics/bulk", bulk(now - 5 * HOUR, yes=3, flag="old-row"))
    await post(client, "/api/client/metrics", metrics(now - 30, yes=4, flag="fresh"))
    await post(client, "/api/client/metrics/bulk", bulk(None, yes=6, flag="fresh-row"))
    windows = await _windows(client)
    assert windows["lastHour"] == {"fresh": {"yes": 4, "no": 0}, "fresh-row": {"yes": 6, "no": 0}}
    assert windows["lastMinute"] == windows["lastHour"]
    # the hourly reads still have the old counts, in their own hours
    assert await _raw(client, "old-bucket") == {_hour_iso(now - 3 * HOUR): 2}
    assert await _raw(client, "old-row") == {_hour_iso(now - 5 * HOUR): 3}


async def test_pruning_is_counted_by_table(client, clock):
    """Before: what the pruner removed was only an INFO log line."""
    await post(client, "/api/client/metrics", metrics(clock.now() - 60, yes=1))
    store = client.app[STORE]
    store.fold()
    clock.advance(WINDOW + 2 * HOUR)
    deleted = await store.prune(RetentionPolicy(), clock.now())
    assert deleted["hourly_counts"] == 1 and deleted["minute_counts"] == 1
    text = await (await client.get("/internal-backstage/prometheus")).text()
    pruned = samples(text, "metrics_proxy_pruned_rows_total")
    assert pruned['{reason="retention",table="hourly_counts"}'] == 1
    assert pruned['{reason="retention",table="minute_counts"}'] == 1
    assert pruned['{reason="retention",table="instances"}'] == 1
    assert "# TYPE metrics_proxy_pruned_rows_total counter" in text


async def test_reads_leave_out_hours_after_the_current_one(client, clock):
    """Rows of hours still to come exist only if the proxy's clock stepped back (or were stored
    before this rule): the summary's last hour and raw usage are the hours up to now, never later."""
    now = clock.now()
    await post(client, "/api/client/metrics", metrics(now, yes=5))
    clock.set(now - 2 * HOUR)  # the clock steps back: the counts' hour lies ahead of it
    assert await _summary(client) == {}
    resp = await client.get("/api/admin/client-metrics/features/flag-a/raw?hoursBack=2", headers=admin_headers())
    assert (await resp.json())["data"] == []
    clock.set(now)
    assert await _summary(client) == {_hour_iso(now): 5}
