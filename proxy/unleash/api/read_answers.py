"""The original Unleash metrics API's answers, shaped from the store's rows into their Structs
(proxy/unleash/schemas/reads.py). Answers over a window ending "now" come as `Windowed`, with the
moment the clock alone changes them, for the answer cache.

Every list of flags holds at most `max_flags` (read_max_flags), the first by name; a list cut
short carries the count of all of them (`...Total`, or for seen-apps, a map of flags with no room
for a field, the FLAGS_TOTAL_HEADER). seen-toggles and seen-apps grow with apps x flags: they are
written entry by entry into one buffer of at most `max_bytes` (read_max_answer_bytes), yielding to
the loop between batches, and say in a header how many apps (flags) there were when that cuts them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote

import msgspec

from proxy.api.answer_cache import Encoded, Windowed, leaves_window
from proxy.api.bounded_json import BoundedJson
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
# On a seen-apps answer that does not list every flag (read_max_flags, read_max_answer_bytes): how
# many flags there are; on a seen-toggles answer cut by read_max_answer_bytes: how many apps.
FLAGS_TOTAL_HEADER = "Metrics-Proxy-Flags-Total"
APPS_TOTAL_HEADER = "Metrics-Proxy-Apps-Total"
# Entries (a flag x app of seen-apps, a flag name of seen-toggles) built and encoded per loop pass:
# 5,000 flags of 20 apps built at once held every other request for up to 75 ms.
ENTRIES_PER_PASS = 5000


@lru_cache(maxsize=4096)  # answers repeat the same hours and sightings many times
def iso_ms(seconds: float) -> str:
    """Epoch seconds as Unleash prints dates: `2026-11-22T18:00:00.000Z`."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _total(total: int | None) -> int | msgspec.UnsetType:
    return msgspec.UNSET if total is None else total


async def feature_toggles(store: Store, now: float, max_flags: int) -> Windowed:
    windows = await store.read(queries.feature_toggle_windows, now, max_flags)
    answer = FeatureToggleWindows(**{
        name: {flag: ToggleCounts(yes=yes, no=no) for flag, (yes, no) in window.counts.items()}
        for name, window in windows.items()
    }, lastHourTotal=_total(windows["lastHour"].total), lastMinuteTotal=_total(windows["lastMinute"].total))
    return Windowed(answer, queries.minute_floor(now) + 60)  # both windows move by the minute


async def seen_toggles(store: Store, now: float, max_flags: int, max_bytes: int) -> Encoded:
    since = now - SEEN_TOGGLES_WINDOW
    out = BoundedJson(max_bytes)
    entries = 0

    async def consume(apps: list[reads.AppSeen]) -> bool:
        nonlocal entries
        for a in apps:
            if not out.add(SeenToggles(appName=a.app_name, seenToggles=a.flags, metricsCount=a.counted,
                                       seenTogglesTotal=_total(a.total))):
                return False
            entries += len(a.flags)
            if entries >= ENTRIES_PER_PASS:
                entries = 0
                await asyncio.sleep(0)
        return True

    apps_total, oldest = await store.read(reads.seen_toggles, since, queries.minute_floor(since), max_flags, consume)
    # metricsCount sums whole minutes: it also moves when the next minute begins
    return Encoded(out.close(), leaves_window(oldest, SEEN_TOGGLES_WINDOW, queries.minute_floor(now) + 60),
                   () if apps_total is None else ((APPS_TOTAL_HEADER, str(apps_total)),))


async def applications(store: Store, now: float, strategy: str | None) -> Windowed:
    rows = await store.read(reads.applications, now - APPLICATIONS_WINDOW, strategy)
    found = [
        ApplicationListed(appName=app.app_name, strategies=app.strategies, createdAt=iso_ms(app.created_at),
                          links=ApplicationLinks(appDetails=f"/api/client/applications/{quote(app.app_name, safe='')}"))
        for app in rows
    ]
    oldest = min((app.last_seen for app in rows), default=None)
    return Windowed(Applications(applications=found), leaves_window(oldest, APPLICATIONS_WINDOW))


async def application(store: Store, name: str, max_flags: int) -> ClientApplication | None:
    found = await store.read(reads.application, name, max_flags)
    if found is None:
        return None
    return ClientApplication(
        appName=name,
        instances=[ClientInstance(instanceId=i.instance_id, clientIp=i.client_ip, lastSeen=iso_ms(i.last_seen),
                                  createdAt=iso_ms(i.created_at)) for i in found.instances],
        strategies=[AppStrategies(appName=name, strategies=found.strategies)],
        seenToggles=found.flags,
        seenTogglesTotal=_total(found.total),
    )


async def seen_apps(store: Store, max_flags: int, max_bytes: int) -> Encoded:
    """`{flag: [app]}` for the first flags by name still in the history, at most `max_flags` and
    `max_bytes` of answer (the clock alone never changes it). An app is one Struct however many
    flags list it (100 apps x 1,000 flags encode 100,000 entries from 100 objects)."""
    out = BoundedJson(max_bytes, "{")
    known: dict[str, SeenApp] = {}
    unknown: dict[tuple[str, str], SeenApp] = {}
    entries = 0

    def head(apps: list[reads.AppRow], orphans: list[reads.PairSeen]) -> None:
        known.update((app.app_name, SeenApp(appName=app.app_name, createdAt=iso_ms(app.created_at),
                                             updatedAt=iso_ms(app.last_seen), strategies=app.strategies))
                     for app in apps)
        # An app whose instances were pruned before its flag sightings: dates from those sightings.
        unknown.update(((pair.feature_name, pair.app_name),
                        SeenApp(appName=pair.app_name, createdAt=iso_ms(pair.first_seen),
                                updatedAt=iso_ms(pair.last_seen), strategies=[]))
                       for pair in orphans)

    async def consume(flags: list[reads.FlagApps]) -> bool:
        nonlocal entries
        for flag in flags:
            listed = [known.get(app) or unknown[(flag.feature_name, app)] for app in reads.names(flag.apps_json)]
            if not out.add(listed, key=flag.feature_name):
                return False
            entries += len(listed)
            if entries >= ENTRIES_PER_PASS:
                entries = 0
                await asyncio.sleep(0)
        return True

    total = await store.read(reads.seen_apps, max_flags, consume, head)
    return Encoded(out.close(), headers=() if out.entries == total else ((FLAGS_TOTAL_HEADER, str(total)),))
