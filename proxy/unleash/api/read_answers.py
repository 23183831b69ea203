"""The original Unleash metrics API's answers, shaped from the store's rows into their Structs
(proxy/unleash/schemas/reads.py). Answers over a window ending "now" come as `Windowed`, with the
moment the clock alone changes them, for the answer cache.

Every list of flags holds at most `max_flags` (read_max_flags), the first by name; a list cut
short carries the count of all of them (`...Total`, or for seen-apps, a map of flags with no room
for a field, the FLAGS_TOTAL_HEADER), so an answer stays the size the setting allows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote

import msgspec

from proxy.api.answer_cache import Encoded, Windowed, leaves_window
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
# On a seen-apps answer cut to read_max_flags flags: how many flags there are in all.
FLAGS_TOTAL_HEADER = "Metrics-Proxy-Flags-Total"
SEEN_APPS_SLICE = 5000  # (flag, app) entries of seen-apps built and encoded per loop pass: ~1-2 ms

_encode = msgspec.json.Encoder().encode


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


async def seen_toggles(store: Store, now: float, max_flags: int) -> Windowed:
    since = now - SEEN_TOGGLES_WINDOW
    apps, oldest = await store.read(reads.seen_toggles, since, queries.minute_floor(since), max_flags)
    answer = [SeenToggles(appName=a.app_name, seenToggles=a.flags, metricsCount=a.counted,
                          seenTogglesTotal=_total(a.total)) for a in apps]
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


async def seen_apps(store: Store, max_flags: int) -> Encoded:
    """`{flag: [app]}` for the first `max_flags` flags by name still in the history (the clock
    alone never changes it). An app is one Struct however many flags list it (100 apps x 1,000
    flags encode 100,000 entries from 100 objects).

    Built and encoded about SEEN_APPS_SLICE entries at a time, yielding to the loop between them: the
    answer is flags x apps entries (5,000 flags of 20 apps: 100,000 entries, 19 MB), which built
    at once held every other request for up to 75 ms."""
    apps, flags, orphans, total = await store.read(reads.seen_apps, max_flags)
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
    # The members of each slice's encoded object, between commas, inside one pair of braces: one
    # join copies the whole answer once (each further copy of a 19 MB answer held the loop ~20 ms).
    parts: list[bytes | memoryview] = [b"{"]
    piece: dict[str, list[SeenApp]] = {}
    entries = 0
    for flag in flags:
        listed = piece[flag.feature_name] = [known.get(app) or unknown[(flag.feature_name, app)]
                                             for app in reads.names(flag.apps_json)]
        entries += len(listed)
        if entries >= SEEN_APPS_SLICE:
            _add_members(parts, piece)
            piece, entries = {}, 0
            await asyncio.sleep(0)
    _add_members(parts, piece)
    parts.append(b"}")
    return Encoded(b"".join(parts), headers=() if total is None else ((FLAGS_TOTAL_HEADER, str(total)),))


def _add_members(parts: list[bytes | memoryview], piece: dict[str, list[SeenApp]]) -> None:
    """`piece`'s members (its encoded object without the braces) after those already in `parts`."""
    if piece:
        if len(parts) > 1:
            parts.append(b",")
        parts.append(memoryview(_encode(piece))[1:-1])
