"""Turning validated client-API bodies into journal entries. Pure functions: no HTTP, no SQL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from proxy.api.errors import bad_data
from proxy.storage.journal import CountRow, InstanceSeen, JournalEntry, PostedBucket
from proxy.unleash.schemas.client import (
    BulkMetrics,
    ClientMetrics,
    ClientRegistration,
    FrontendRegistration,
    Timestamp,
)

DEFAULT_INSTANCE = "default"

# When counts belong (docs/limits.md): Unleash files a count under the hour of its bucket's stop (a
# bulk row's timestamp), keeps an hourly row until its hour began 48 hours ago (clearMetrics(48)) and
# reads no further back (raw usage: hoursBack <= 48). A count outside those hours would only be
# deleted there at the next sweep, so it is refused here; a stop further ahead than that is no clock
# skew but nonsense, refused too. Counts cannot come from after their receipt: a stop ahead of the
# proxy's clock (an SDK's clock running fast) is filed at the moment of receipt instead, so no row
# lies in a future hour, where it would count as the last hour and outlive the retention.
USAGE_WINDOW = 48 * 3600


def epoch_seconds(ts: Timestamp) -> float:
    """RFC 3339 datetimes (naive ones read as UTC) or epoch milliseconds."""
    if isinstance(ts, int):
        return ts / 1000
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def hour_of(seconds: float) -> int:
    return int(seconds // 3600 * 3600)


def usage_hour(seconds: float, received: float, path: str) -> int:
    """The hour a count stopping at `seconds` is filed under, by the rule above; a 400 naming `path`
    when it falls outside the 48 hours."""
    if seconds > received + USAGE_WINDOW:
        raise bad_data(f"{_moment(seconds)} is more than 48 hours ahead of this proxy's clock "
                       f"({_moment(received)})", path)
    hour = hour_of(min(seconds, received))
    if hour <= received - USAGE_WINDOW:
        raise bad_data(f"{_moment(seconds)} is in an hour that began more than 48 hours before this proxy's "
                       f"clock ({_moment(received)}); Unleash keeps hourly usage for 48 hours", path)
    return hour


def _moment(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return f"{seconds:.0f} (epoch seconds)"


def iso(ts: Timestamp, path: str, *, unix_seconds: bool = False) -> str:
    """A date-time as RFC 3339 text; `started` may come as unix seconds (register)."""
    if isinstance(ts, int):
        seconds = ts if unix_seconds else ts / 1000
        try:
            moment = datetime.fromtimestamp(seconds, tz=UTC)
        except (ValueError, OverflowError, OSError):  # beyond year 1..9999: no date-time to store
            raise bad_data(f"{ts} is not a timestamp between the years 1 and 9999", path) from None
        return moment.isoformat().replace("+00:00", "Z")
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _strategies(values: Iterable[str | None] | None) -> list[str] | None:
    # Unleash strips the entries of strategies that are no Joi string: nulls, and empty strings.
    return None if values is None else [v for v in values if v]


def metrics_entry(
    body: ClientMetrics, environment: str, received: float, instance_header: str | None,
    sdk_header: str | None, client_ip: str | None,
) -> JournalEntry:
    instance = InstanceSeen(
        app_name=body.appName,
        instance_id=body.instanceId or instance_header or DEFAULT_INSTANCE,
        sdk_version=body.sdkVersion or sdk_header,
        client_ip=client_ip,
    )
    posted = None
    bucket = body.bucket
    if bucket is not None:
        start, stop = epoch_seconds(bucket.start), epoch_seconds(bucket.stop)
        if start > stop:
            raise bad_data("bucket.start must not be after bucket.stop", "bucket.start")
        hour = usage_hour(stop, received, "bucket.stop")
        if bucket.toggles:
            posted = PostedBucket(body.appName, hour, bucket.toggles)
    return JournalEntry(environment, received, [], [instance], bucket=posted)


def registration_entry(
    body: ClientRegistration | FrontendRegistration, environment: str, received: float,
    instance_header: str | None, sdk_header: str | None, client_ip: str | None,
) -> JournalEntry:
    strategies = _strategies(getattr(body, "strategies", None))
    projects = getattr(body, "projects", None)
    instance = InstanceSeen(
        app_name=body.appName,
        instance_id=body.instanceId or instance_header or DEFAULT_INSTANCE,
        sdk_version=body.sdkVersion or sdk_header,
        strategies=strategies,
        interval=body.interval,
        started=iso(body.started, "started", unix_seconds=True) if body.started is not None else None,
        client_ip=client_ip,
        projects=projects,
    )
    return JournalEntry(environment, received, [], [instance])


def bulk_entries(
    body: BulkMetrics, environment: str | None, received: float, client_ip: str | None,
) -> tuple[list[JournalEntry], int]:
    """One entry per environment. With `environment` set (token auth) rows of any other
    environment are refused, as Unleash does; returns (entries, refused row count)."""
    counts: dict[str, list[CountRow]] = defaultdict(list)
    instances: dict[str, list[InstanceSeen]] = defaultdict(list)
    refused = 0
    for i, metric in enumerate(body.metrics):
        if environment is not None and metric.environment != environment:
            refused += 1
            continue
        hour = hour_of(received) if metric.timestamp is None else \
            usage_hour(epoch_seconds(metric.timestamp), received, f"metrics[{i}].timestamp")
        counts[metric.environment].append(
            CountRow(metric.appName, metric.featureName, hour, metric.yes, metric.no, metric.variants or None)
        )
    for i, app in enumerate(body.applications):
        env = environment if environment is not None else app.environment
        instances[env].append(
            InstanceSeen(
                app_name=app.appName,
                instance_id=app.instanceId or DEFAULT_INSTANCE,
                sdk_version=app.sdkVersion,
                strategies=_strategies(app.strategies),
                interval=app.interval,
                started=iso(app.started, f"applications[{i}].started") if app.started is not None else None,
                client_ip=client_ip,
                projects=app.projects,
            )
        )
    entries = [
        JournalEntry(env, received, counts.get(env, []), instances.get(env, []))
        for env in sorted(set(counts) | set(instances))
    ]
    return entries, refused
