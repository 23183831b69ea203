"""Wire schemas of the Unleash client API, as the SDKs send them.

These Structs are the one source of truth: they validate inbound bodies and describe the API in
/openapi.json. Unknown fields are tolerated (SDKs add `connectionId` and the like), `null` optional
fields are accepted, and counts are bounded like Unleash Edge's u32 so a rogue SDK cannot overflow
the store. Names, ids and the register interval are bounded by Unleash's own limits (limits.py,
docs/limits.md): a 200,000-character flag name is a 400 here, not a row Unleash refuses later.

Unleash 8.x shapes are accepted: `sdkFlavor`/`sdkFlavorVersion` (an integration built on an SDK,
such as an OpenFeature provider; accepted, not stored or forwarded, and not capped at Unleash's 256
and 32 characters), bodies without `environment`, and the bulk `seenTokens` of Unleash Edge 20.4+,
deliberately not declared: it lists token secrets, so msgspec skips it while decoding and it never
reaches the store, a log line or the upstream.

Decoded bodies hold plain data and never take part in reference cycles, so their Structs are
untracked by the cyclic GC (`gc=False`): a 200-flag body is ~400 objects the collector would
otherwise count towards its next pass and walk while requests are in flight.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from proxy.storage.journal import Count, ToggleCount
from proxy.unleash.schemas.limits import (
    AppName,
    EnvironmentName,
    FlagName,
    InstanceId,
    Interval,
    ProjectName,
    SdkVersion,
    StrategyName,
    VariantName,
)

# RFC 3339 text (up to nanosecond precision) or epoch milliseconds, as Unleash's Joi date() accepts.
# Milliseconds are bounded to the years 1..9999 so that every stored hour has a date-time upstream.
EpochMillis = Annotated[int, msgspec.Meta(ge=-62_135_596_800_000, le=253_402_300_799_999)]
Timestamp = datetime | EpochMillis
# When counts belong (proxy/unleash/api/ingest.py, docs/limits.md), said where the time is sent.
CountTime = Annotated[Timestamp, msgspec.Meta(description=(
    "The counts belong to this moment's hour, as Unleash files them. It must lie within 48 hours of the "
    "proxy's clock, either way (Unleash keeps hourly usage for 48 hours); one ahead of the clock counts at "
    "the moment the proxy received it."))]


class ToggleUsage(ToggleCount, kw_only=True, gc=False):
    """One flag's counts in a bucket: how often it was on, off, and each variant returned."""

    # The journal's ToggleCount with the variant names bounded. The bound is on this wire Struct, not
    # on the journal's, so journal rows written before the bound existed still replay.
    variants: dict[VariantName, Count] | None = None


class Bucket(msgspec.Struct, kw_only=True, gc=False):
    start: Timestamp
    stop: CountTime
    toggles: dict[FlagName, ToggleUsage] = {}


class SdkInstance(msgspec.Struct, kw_only=True, gc=False):
    """How a server-side SDK instance describes itself in its metrics and register posts."""

    appName: AppName
    instanceId: InstanceId | None = None
    sdkVersion: SdkVersion | None = None
    platformName: str | None = None
    platformVersion: str | None = None
    yggdrasilVersion: str | None = None
    specVersion: str | None = None
    sdkFlavor: str | None = None
    sdkFlavorVersion: str | None = None
    connectionId: str | None = None


class ClientMetrics(SdkInstance, kw_only=True, gc=False):
    """Body of POST /api/client/metrics (and /api/frontend/client/metrics)."""

    environment: str | None = None  # deprecated: the environment comes from the token
    bucket: Bucket | None = None
    # Kept raw: each entry is decoded on its own (proxy/unleash/api/impact.py) so a bad one costs no counts.
    impactMetrics: msgspec.Raw = msgspec.Raw()


class ClientRegistration(SdkInstance, kw_only=True, gc=False):
    """Body of POST /api/client/register; Unleash requires appName, interval, started, strategies."""

    interval: Interval
    started: Timestamp
    strategies: list[StrategyName | None]
    projects: list[ProjectName] | None = None


class FrontendRegistration(msgspec.Struct, kw_only=True, gc=False):
    """Body of POST /api/frontend/client/register: browser SDKs send little more than appName."""

    appName: AppName
    instanceId: InstanceId | None = None
    sdkVersion: SdkVersion | None = None
    sdkFlavor: str | None = None
    sdkFlavorVersion: str | None = None
    environment: str | None = None
    interval: Interval | None = None
    started: Timestamp | None = None


class ConnectVia(msgspec.Struct, kw_only=True, gc=False):
    appName: AppName
    instanceId: InstanceId


class BulkApplication(msgspec.Struct, kw_only=True, gc=False):
    appName: AppName
    instanceId: InstanceId
    environment: EnvironmentName
    connectVia: list[ConnectVia] | None = None
    interval: Interval | None = None
    started: Timestamp | None = None
    strategies: list[StrategyName | None] | None = None
    projects: list[ProjectName] | None = None
    sdkVersion: SdkVersion | None = None
    sdkType: Literal["frontend", "backend"] | None = None
    sdkFlavor: str | None = None
    sdkFlavorVersion: str | None = None


class BulkMetric(msgspec.Struct, kw_only=True, gc=False):
    featureName: FlagName
    appName: AppName
    environment: EnvironmentName
    timestamp: CountTime | None = None  # none: the moment the proxy received it
    yes: Count = 0
    no: Count = 0
    variants: dict[VariantName, Count] | None = None


class SentApplication(BulkApplication, omit_defaults=True, kw_only=True, gc=False):
    """An `applications` entry of a bulk body this proxy sends upstream. Unleash checks bulk
    applications against its register schema and refuses the whole request without `interval`,
    `started` or `strategies`, so those are always there; options the SDK did not report are left out."""

    interval: Interval
    started: Timestamp
    strategies: list[StrategyName | None]


class SentMetric(BulkMetric, omit_defaults=True, kw_only=True, gc=False):
    """A `metrics` entry of a bulk body this proxy sends upstream: every count field written out."""

    timestamp: Timestamp
    yes: Count
    no: Count
    variants: dict[VariantName, Count]


class BulkMetrics(msgspec.Struct, kw_only=True, gc=False):
    """Body of POST /api/client/metrics/bulk: what Unleash Edge and this proxy send upstream."""

    applications: list[BulkApplication]
    metrics: list[BulkMetric]
    impactMetrics: msgspec.Raw = msgspec.Raw()  # as in ClientMetrics
