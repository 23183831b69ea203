"""The Unleash admin answers (`/api/admin/...`), shaped from the store's rows into their Structs
(proxy/unleash/schemas/reads.py), field for field as Unleash 7.5.1 answers them."""

from __future__ import annotations

import msgspec

from proxy.api.answer_cache import Windowed, leaves_window
from proxy.storage import Store
from proxy.unleash.api.read_answers import iso_ms
from proxy.unleash.schemas.reads import (
    AdminApplication,
    ApplicationInstance,
    ApplicationOverview,
    ApplicationsPage,
    ApplicationSummary,
    AppUsage,
    EnvironmentHourUsage,
    EnvironmentInstance,
    EnvironmentInstances,
    EnvironmentIssues,
    FeatureSummary,
    HourlyUsage,
    OverviewEnvironment,
    OverviewIssues,
    RawUsage,
    SeenFlag,
    SelfLink,
)
from proxy.unleash.store import admin_reads
from proxy.unleash.store.admin_reads import ApplicationsQuery

INSTANCES_WINDOW = 86400
DEFAULT_PROJECT = "default"  # an app whose instances name no project
# The proxy does not record which API an instance registered through; frontend SDKs are told apart
# by the name in their sdkVersion, as far as it is one of these.
FRONTEND_SDK_PREFIXES = ("unleash-client-js", "unleash-js-sdk", "unleash-proxy-client", "unleash-react",
                         "unleash-client-react", "unleash-android", "unleash-ios", "unleash-client-swift",
                         "unleash-flutter")


def sdk_type(version: str | None) -> str:
    return "frontend" if version and version.startswith(FRONTEND_SDK_PREFIXES) else "backend"


async def applications_page(store: Store, query: ApplicationsQuery) -> ApplicationsPage:
    total, rows = await store.read(admin_reads.applications_page, query)
    summaries = []
    for app in rows:
        projects = app.projects or [DEFAULT_PROJECT]
        summaries.append(ApplicationSummary(
            appName=app.app_name, createdAt=iso_ms(app.created_at), updatedAt=iso_ms(app.last_seen),
            strategies=app.strategies, project=projects[0],
            environment=app.environments[0] if app.environments else None,
            usage=[AppUsage(project=name, environments=app.environments) for name in projects],
        ))
    return ApplicationsPage(total=total, applications=summaries)


async def application(store: Store, name: str, max_flags: int) -> AdminApplication | None:
    """One application, its seen flags the first `max_flags` by name (read_max_flags; Unleash
    lists only the flags it defines, at most its featureFlags limit)."""
    found = await store.read(admin_reads.application, name, max_flags)
    if found is None:
        return None
    return AdminApplication(
        appName=name, createdAt=iso_ms(found.created_at), strategies=found.strategies,
        instances=[
            ApplicationInstance(appName=name, instanceId=i.instance_id, sdkVersion=i.sdk_version,
                                sdkType=sdk_type(i.sdk_version), clientIp=i.client_ip, lastSeen=iso_ms(i.last_seen),
                                createdAt=iso_ms(i.created_at), environment=i.environment)
            for i in found.instances
        ],
        # Unleash lists its flag definitions here; the proxy knows only what the SDKs reported: the
        # name and when it first and last saw the flag.
        seenToggles=[SeenFlag(name=f.feature_name, project=DEFAULT_PROJECT, createdAt=iso_ms(f.first_seen),
                              lastSeenAt=iso_ms(f.last_seen)) for f in found.flags],
        links=SelfLink(self=f"/api/applications/{name}"),
        seenTogglesTotal=msgspec.UNSET if found.flags_total is None else found.flags_total,
    )


async def application_overview(store: Store, name: str) -> ApplicationOverview | None:
    found = await store.read(admin_reads.application_overview, name)
    if found is None:
        return None
    environments: dict[str, OverviewEnvironment] = {}
    last_seen: dict[str, float] = {}
    for sdk in found.sdks:
        entry = environments.get(sdk.environment)
        if entry is None:
            entry = environments[sdk.environment] = OverviewEnvironment(
                name=sdk.environment, instanceCount=0, sdks=[], frontendSdks=[], backendSdks=[], lastSeen="",
                issues=EnvironmentIssues(),
            )
        entry.instanceCount += sdk.instances
        last_seen[sdk.environment] = max(last_seen.get(sdk.environment, sdk.last_seen), sdk.last_seen)
        if sdk.sdk_version:
            entry.sdks.append(sdk.sdk_version)
            (entry.frontendSdks if sdk_type(sdk.sdk_version) == "frontend" else entry.backendSdks).append(sdk.sdk_version)
    for env, entry in environments.items():
        entry.lastSeen = iso_ms(last_seen[env])
    # Which flags or strategies are missing needs Unleash's definitions; the proxy has none.
    return ApplicationOverview(projects=found.projects or [DEFAULT_PROJECT], featureCount=found.feature_count,
                               environments=list(environments.values()), issues=OverviewIssues())


async def instances(store: Store, name: str, environment: str, now: float) -> Windowed:
    """Instances of an app in one environment seen in the last 24 hours, newest first."""
    rows = await store.read(admin_reads.instances, name, environment, now - INSTANCES_WINDOW)
    found = [EnvironmentInstance(instanceId=r.instance_id, clientIp=r.client_ip, sdkVersion=r.sdk_version,
                                 lastSeen=iso_ms(r.last_seen)) for r in rows]
    oldest = rows[-1].last_seen if rows else None  # newest first
    return Windowed(EnvironmentInstances(instances=found), leaves_window(oldest, INSTANCES_WINDOW))


async def raw_usage(store: Store, flag: str, hours_back: int, now: float) -> Windowed:
    """One row per hour x app x environment over the last `hours_back` hours (current hour
    included), zero-filled for the apps and environments that reported the flag in that window.
    Hours after the current one are no part of it (proxy/unleash/api/ingest.py: when counts belong)."""
    newest = int(now // 3600 * 3600)
    rows = await store.read(admin_reads.raw_usage, flag, newest, newest - (hours_back - 1) * 3600)
    data = [HourlyUsage(featureName=flag, appName=r.app_name, environment=r.environment, timestamp=iso_ms(r.hour),
                        yes=r.yes, no=r.no, variants=r.variants) for r in rows]
    return Windowed(RawUsage(data=data), newest + 3600)


async def feature_summary(store: Store, flag: str, now: float) -> Windowed:
    """Usage per environment in the hour buckets of the last hour, and the apps that reported it;
    an hour after the current one is no part of the last hour (proxy/unleash/api/ingest.py)."""
    since = now - 3600
    usage, apps = await store.read(admin_reads.feature_summary, flag, since, now // 3600 * 3600)
    # Hour buckets h >= since stay in while since <= h: until the oldest one's start is an hour ago.
    oldest_hour = -(-since // 3600) * 3600
    return Windowed(FeatureSummary(
        featureName=flag,
        lastHourUsage=[EnvironmentHourUsage(environment=u.environment, timestamp=iso_ms(u.hour), yes=u.yes, no=u.no)
                       for u in usage],
        seenApplications=apps,
    ), oldest_hour + 3600)
