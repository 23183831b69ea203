"""Answers of the Unleash read endpoints, field for field as Unleash answers them.

The original metrics API (`/api/client/...`, from Unleash's old metrics-api docs) and the current
admin shapes (`/api/admin/...`, as Unleash 7.5.1 answers them). These Structs are what the handlers
encode and what /openapi.json describes. Fields the proxy cannot know (a flag's description, an
app's colour) are null, as Unleash answers them until they are set in its UI. A list of flags
holds at most read_max_flags; the `...Total` beside a list cut short is the one field Unleash has not.

Built in bulk and never part of a reference cycle, so untracked by the cyclic GC (`gc=False`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

IsoTime = str  # `2026-11-22T18:00:00.000Z`: UTC, milliseconds, as Unleash prints dates

# How many flags a list held before `read_max_flags` cut it (docs/reads.md); absent from an answer
# whose list is whole, so answers within the bound have exactly Unleash's fields.
FlagsTotal = Annotated[int, msgspec.Meta(
    ge=0, description="present only when the list beside it was cut to read_max_flags: how many flags it had")]


class _Answer(msgspec.Struct, kw_only=True, gc=False):
    pass


# --- the original metrics API ----------------------------------------------------------------

class ToggleCounts(_Answer, kw_only=True):
    yes: int
    no: int


class FeatureToggleWindows(_Answer, kw_only=True):
    """GET /api/client/metrics/feature-toggles: counts per flag received in the last hour and minute."""

    lastHour: dict[str, ToggleCounts]
    lastMinute: dict[str, ToggleCounts]
    lastHourTotal: FlagsTotal | msgspec.UnsetType = msgspec.UNSET
    lastMinuteTotal: FlagsTotal | msgspec.UnsetType = msgspec.UNSET


class SeenToggles(_Answer, kw_only=True):
    """One app of GET /api/client/seen-toggles: the flags it reported in the last hour."""

    appName: str
    seenToggles: list[str]
    metricsCount: int
    seenTogglesTotal: FlagsTotal | msgspec.UnsetType = msgspec.UNSET


class ApplicationLinks(_Answer, kw_only=True):
    appDetails: str


class ApplicationListed(_Answer, kw_only=True):
    appName: str
    strategies: list[str]
    createdAt: IsoTime
    links: ApplicationLinks


class Applications(_Answer, kw_only=True):
    """GET /api/client/applications: apps seen in the last two days."""

    applications: list[ApplicationListed]


class ClientInstance(_Answer, kw_only=True):
    instanceId: str
    clientIp: str | None
    lastSeen: IsoTime
    createdAt: IsoTime


class AppStrategies(_Answer, kw_only=True):
    appName: str
    strategies: list[str]


class ClientApplication(_Answer, kw_only=True):
    """GET /api/client/applications/{appName}."""

    appName: str
    instances: list[ClientInstance]
    strategies: list[AppStrategies]
    seenToggles: list[str]
    seenTogglesTotal: FlagsTotal | msgspec.UnsetType = msgspec.UNSET


class SeenApp(_Answer, kw_only=True):
    """An app as Unleash describes it; one app of GET /api/client/seen-apps, whose answer is
    `{flag: [SeenApp]}`."""

    appName: str
    createdAt: IsoTime
    updatedAt: IsoTime
    description: str | None = None
    strategies: list[str]
    url: str | None = None
    color: str | None = None
    icon: str | None = None


# --- the admin shapes -------------------------------------------------------------------------

class AppUsage(_Answer, kw_only=True):
    project: str
    environments: list[str]


class ApplicationSummary(SeenApp, kw_only=True):
    """An app as the admin applications page lists it: its description, and where it is used."""

    createdBy: str = "unleash_system_user"
    project: str
    environment: str | None
    usage: list[AppUsage]


class ApplicationsPage(_Answer, kw_only=True):
    """GET /api/admin/metrics/applications."""

    total: int
    applications: list[ApplicationSummary]


class ApplicationInstance(_Answer, kw_only=True):
    appName: str
    instanceId: str
    sdkVersion: str | None
    sdkType: Literal["frontend", "backend"]
    clientIp: str | None
    lastSeen: IsoTime
    createdAt: IsoTime
    environment: str


class SeenFlag(_Answer, kw_only=True):
    name: str
    description: str | None = None
    type: str | None = None
    project: str
    stale: bool = False
    createdAt: IsoTime
    lastSeenAt: IsoTime
    impressionData: bool = False
    archived: bool = False


class SelfLink(_Answer, kw_only=True):
    self: str


class AdminApplication(_Answer, kw_only=True):
    """GET /api/admin/metrics/applications/{appName}."""

    appName: str
    createdAt: IsoTime
    description: str | None = None
    url: str | None = None
    color: str | None = None
    icon: str | None = None
    strategies: list[str]
    instances: list[ApplicationInstance]
    seenToggles: list[SeenFlag]
    links: SelfLink
    seenTogglesTotal: FlagsTotal | msgspec.UnsetType = msgspec.UNSET


class EnvironmentIssues(_Answer, kw_only=True):
    missingFeatures: list[str] = []
    outdatedSdks: list[str] = []


class OverviewEnvironment(_Answer, kw_only=True):
    name: str
    instanceCount: int
    sdks: list[str]
    frontendSdks: list[str]
    backendSdks: list[str]
    lastSeen: IsoTime
    issues: EnvironmentIssues


class OverviewIssues(_Answer, kw_only=True):
    missingStrategies: list[str] = []


class ApplicationOverview(_Answer, kw_only=True):
    """GET /api/admin/metrics/applications/{appName}/overview."""

    projects: list[str]
    featureCount: int
    environments: list[OverviewEnvironment]
    issues: OverviewIssues


class EnvironmentInstance(_Answer, kw_only=True):
    instanceId: str
    clientIp: str | None
    sdkVersion: str | None
    lastSeen: IsoTime


class EnvironmentInstances(_Answer, kw_only=True):
    """GET /api/admin/metrics/instances/{appName}/environment/{environment}: the last 24 hours."""

    instances: list[EnvironmentInstance]


class HourlyUsage(_Answer, kw_only=True):
    featureName: str
    appName: str
    environment: str
    timestamp: IsoTime
    yes: int
    no: int
    variants: dict[str, int]


class RawUsage(_Answer, kw_only=True):
    """GET /api/admin/client-metrics/features/{name}/raw: hour x app x environment, zero-filled."""

    version: int = 1
    maturity: str = "stable"
    data: list[HourlyUsage]


class EnvironmentHourUsage(_Answer, kw_only=True):
    environment: str
    timestamp: IsoTime
    yes: int
    no: int


class FeatureSummary(_Answer, kw_only=True):
    """GET /api/admin/client-metrics/features/{name}: the last hour's usage and the apps behind it."""

    version: int = 1
    maturity: str = "stable"
    featureName: str
    lastHourUsage: list[EnvironmentHourUsage]
    seenApplications: list[str]
