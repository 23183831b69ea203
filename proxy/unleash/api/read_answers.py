"""The original Unleash metrics API's answers, shaped from the store's rows into their Structs
(proxy/unleash/schemas/reads.py). Answers over a window ending "now" come as `Windowed`, with the
moment the clock alone changes them, for the answer cache."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote

from proxy.api.answer_cache import Windowed, leaves_window
from proxy.storage import Store
from proxy.unleash.schemas.reads import (
    ApplicationLinks,
    ApplicationListed,
    Applications,
    AppStrategies,
    ClientApplication,
    ClientInstance,
    FeatureToggleWindows,
    SeenApp,
    SeenToggles,
    ToggleCounts,
)
from proxy.unleash.store import queries, reads

SEEN_TOGGLES_WINDOW = 3600
APPLICATIONS_WINDOW = 2 * 86400


@lru_cache(maxsize=4096)  # answers repeat the same hours and sightings many times
def iso_ms(seconds: float) -> str:
    """Epoch seconds as Unleash prints dates: `2026-11-22T18:00:00.000Z`."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def feature_toggles(store: Store, now: float) -> Windowed:
    windows = await store.read(queries.feature_toggle_windows, now)
    answer = FeatureToggleWindows(**{
        name: {flag: ToggleCounts(yes=yes, no=no) for flag, (yes, no) in counts.items()}
        for name, counts in windows.items()
    })
    return Windowed(answer, queries.minute_floor(now) + 60)  # both windows move by the minute


async def seen_toggles(store: Store, now: float) -> Windowed:
    since = now - SEEN_TOGGLES_WINDOW
    apps, oldest = await store.read(reads.seen_toggles, since, queries.minute_floor(since))
    answer = [SeenToggles(appName=a.app_name, seenToggles=a.flags, metricsCount=a.counted) for a in apps]
    # metricsCount sums whole minutes: it also moves when the next minute begins
    return Windowed(answer, leaves_window(oldest, SEEN_TOGGLES_WINDOW, queries.minute_floor(now) + 60))


async def applications(store: Store, now: float, strategy: str | None) -> Windowed:
    rows = await store.read(reads.applications, now - APPLICATIONS_WINDOW, strategy)
    found = [
        ApplicationListed(appName=app.app_name, strategies=app.strategies, createdAt=iso_ms(app.created_at),
                          links=ApplicationLinks(appDetails=f"/api/client/applications/{quote(app.app_name, safe='')}"))
        for app in rows
    ]
    oldest = min((app.last_seen for app in rows), default=None)
    return Windowed(Applications(applications=found), leaves_window(oldest, APPLICATIONS_WINDOW))


async def application(store: Store, name: str) -> ClientApplication | None:
    found = await store.read(reads.application, name)
    if found is None:
        return None
    instances, strategies, flags = found
    return ClientApplication(
        appName=name,
        instances=[ClientInstance(instanceId=i.instance_id, clientIp=i.client_ip, lastSeen=iso_ms(i.last_seen),
                                  createdAt=iso_ms(i.created_at)) for i in instances],
        strategies=[AppStrategies(appName=name, strategies=strategies)],
        seenToggles=flags,
    )


async def seen_apps(store: Store) -> dict[str, list[SeenApp]]:
    """`{flag: [app]}` for every flag still in the history. An app is one Struct however many flags
    list it (100 apps x 1,000 flags encode 100,000 entries from 100 objects)."""
    apps, flags, orphans = await store.read(reads.seen_apps)
    known = {
        app.app_name: SeenApp(appName=app.app_name, createdAt=iso_ms(app.created_at),
                              updatedAt=iso_ms(app.last_seen), strategies=app.strategies)
        for app in apps
    }
    # An app whose instances were pruned before its flag sightings: dates from those sightings.
    unknown = {
        (pair.feature_name, pair.app_name): SeenApp(appName=pair.app_name, createdAt=iso_ms(pair.first_seen),
                                                    updatedAt=iso_ms(pair.last_seen), strategies=[])
        for pair in orphans
    }
    return {
        flag.feature_name: [known.get(app) or unknown[(flag.feature_name, app)] for app in flag.apps]
        for flag in flags
    }
