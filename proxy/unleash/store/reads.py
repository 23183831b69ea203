"""Queries behind the original Unleash metrics API (`/api/client/...` read shapes).

Each takes the read-only connection (Store.read folds first, so every acknowledged count is in)
and returns rows, aggregated in SQL; proxy/unleash/api/read_answers.py shapes them into the answer
Structs. Where an answer lists many names per row (1,000 flags per app), SQLite aggregates them
into one JSON array of strings per row, which msgspec decodes far faster than the rows themselves
would arrive one by one.

A list of flags holds at most `max_flags` (read_max_flags), the first by name, with the count of
all of them when that cuts it: what comes into Python is bounded by the setting, not by how many
names SDKs reported (300,000 flags of one app took a read to ~150 MB when every name came out).
seen-toggles and seen-apps, apps x flags, stream their rows in batches to the answer being built,
which stops reading once it holds read_max_answer_bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeVar

import aiosqlite
import msgspec

_decode_names = msgspec.json.Decoder(list[str]).decode

R = TypeVar("R")
# Takes a batch of rows of a streamed answer; False: it has what it can hold, stop reading.
Consume = Callable[[list[R]], Awaitable[bool]]
SEEN_TOGGLES_BATCH = 16  # apps per fetch, each with up to max_flags names
SEEN_APPS_BATCH = 256  # flags per fetch, each with its apps

# One row per application known from its SDK instances: first registration, last sighting and the
# strategies its most recent registration declared (Unleash keeps the latest list, not a union).
APPS_CTE = """
    apps AS (
        SELECT app_name,
               min(created_at) AS created_at,
               max(last_seen) AS last_seen,
               (SELECT latest.strategies FROM instances AS latest
                 WHERE latest.app_name = instances.app_name AND latest.strategies IS NOT NULL
                 ORDER BY latest.last_seen DESC LIMIT 1) AS strategies
          FROM instances GROUP BY app_name
    )
"""


def names(text: str | None) -> list[str]:
    """A JSON array of strings from SQLite (json_group_array, or a stored strategies list)."""
    return _decode_names(text) if text else []


class AppSeen(NamedTuple):
    app_name: str
    flags: list[str]
    counted: int  # yes + no received in the window's minutes
    total: int | None  # flags in the window when `flags` was cut to max_flags, else None


class AppRow(NamedTuple):
    app_name: str
    created_at: float
    last_seen: float
    strategies: list[str]


class InstanceRow(NamedTuple):
    instance_id: str
    client_ip: str | None
    last_seen: float
    created_at: float


class FlagApps(NamedTuple):
    feature_name: str
    apps_json: str  # a JSON array of app names, decoded by the answer a slice at a time (names())


class AppFlags(NamedTuple):
    """One application's instances, its latest declared strategies and the flags it reported."""

    instances: list[InstanceRow]
    strategies: list[str]
    flags: list[str]
    total: int | None  # flags reported when `flags` was cut to max_flags, else None


class PairSeen(NamedTuple):
    """A flag x app pair whose app has no instances left (pruned before the flag's sightings)."""

    feature_name: str
    app_name: str
    first_seen: float
    last_seen: float


async def seen_toggles(db: aiosqlite.Connection, since: float, since_minute: int, max_flags: int,
                       consume: Consume[AppSeen]) -> tuple[int | None, float | None]:
    """Per app in name order, the flags it reported since `since` (the first `max_flags` by name)
    and its counts since `since_minute`, handed to `consume` a batch at a time until it returns
    False. Returns how many apps have flags in the window when `consume` stopped early (else
    None), and the oldest sighting inside the window (when the clock alone changes the answer)."""
    cursor = await db.execute(
        # Apps stream in name order off flag_seen_by_app (no sort: the first rows come before the
        # last app is looked at). Per app, SQLite walks the same index in (app, flag) order and
        # stops after max_flags + 1 names (DISTINCT drops a flag seen in several environments
        # without a sort), so what comes out is bounded by max_flags however many flags an app
        # reported: one array of every flag cost SQLite 28 MB for 300,000 flags of one app. (A
        # covering (app, flag, last_seen) index would save the table lookups, at the price of one
        # more index entry rewritten per flag in every fold.)
        """SELECT apps.app_name,
                  (SELECT json_group_array(feature_name) FROM
                     (SELECT DISTINCT feature_name FROM flag_seen INDEXED BY flag_seen_by_app
                       WHERE flag_seen.app_name = apps.app_name AND last_seen >= :since
                       ORDER BY feature_name LIMIT :max + 1)),
                  (SELECT sum(yes + no) FROM minute_app_totals
                    WHERE minute_app_totals.app_name = apps.app_name AND minute >= :minute)
             FROM (SELECT DISTINCT app_name FROM flag_seen ORDER BY app_name) AS apps""",
        {"since": since, "minute": since_minute, "max": max_flags},
    )
    stopped = False
    try:
        while not stopped and (rows := await cursor.fetchmany(SEEN_TOGGLES_BATCH)):
            batch = []
            for app, toggles, counted in rows:
                flags = names(toggles)
                if not flags:  # no sighting in the window (a WHERE on the subquery would run it twice)
                    continue
                total = None
                if len(flags) > max_flags:
                    del flags[max_flags:]
                    (total,) = (await db.execute_fetchall(
                        """SELECT count(DISTINCT feature_name) FROM flag_seen INDEXED BY flag_seen_by_app
                            WHERE app_name = ? AND last_seen >= ?""", (app, since)))[0]
                batch.append(AppSeen(app, flags, counted or 0, total))
            stopped = bool(batch) and not await consume(batch)
    finally:
        await cursor.close()
    apps_total = None
    if stopped:
        (apps_total,) = (await db.execute_fetchall(
            "SELECT count(DISTINCT app_name) FROM flag_seen WHERE last_seen >= ?", (since,)))[0]
    oldest = await db.execute_fetchall("SELECT min(last_seen) FROM flag_seen WHERE last_seen >= ?", (since,))
    return apps_total, oldest[0][0]


async def applications(db: aiosqlite.Connection, since: float, strategy: str | None) -> list[AppRow]:
    """Applications seen since `since`, optionally only those implementing `strategy`."""
    rows = await db.execute_fetchall(
        f"""WITH {APPS_CTE}
            SELECT app_name, created_at, last_seen, strategies FROM apps
             WHERE last_seen >= :since
               AND (:strategy IS NULL
                    OR EXISTS (SELECT 1 FROM json_each(apps.strategies) WHERE value = :strategy))
             ORDER BY app_name""",
        {"since": since, "strategy": strategy},
    )
    return [AppRow(app, created, seen, names(strategies)) for app, created, seen, strategies in rows]


async def application(db: aiosqlite.Connection, app: str, max_flags: int) -> AppFlags | None:
    """One application's instances, latest declared strategies and the flags it reported (the
    first `max_flags` by name); None if the proxy never heard of it."""
    # With max(), SQLite takes the bare columns from the row holding the maximum: the latest IP.
    instances = await db.execute_fetchall(
        """SELECT instance_id, client_ip, max(last_seen) AS seen, min(created_at) FROM instances
            WHERE app_name = ? GROUP BY instance_id ORDER BY seen DESC, instance_id""",
        (app,),
    )
    toggles = await db.execute_fetchall(
        "SELECT DISTINCT feature_name FROM flag_seen WHERE app_name = ? ORDER BY feature_name LIMIT ?",
        (app, max_flags + 1),
    )
    if not instances and not toggles:
        return None
    total = None
    if len(toggles) > max_flags:
        del toggles[max_flags:]
        total = (await db.execute_fetchall(
            "SELECT count(DISTINCT feature_name) FROM flag_seen WHERE app_name = ?", (app,)))[0][0]
    latest = await db.execute_fetchall(
        """SELECT strategies FROM instances WHERE app_name = ? AND strategies IS NOT NULL
            ORDER BY last_seen DESC LIMIT 1""",
        (app,),
    )
    strategies = names(latest[0][0]) if latest else []
    return AppFlags([InstanceRow(*row) for row in instances], strategies, [name for (name,) in toggles], total)


async def seen_apps(db: aiosqlite.Connection, max_flags: int, consume: Consume[FlagApps],
                    head: Callable[[list[AppRow], list[PairSeen]], None]) -> int:
    """The first `max_flags` flags by name still in the history, each with the apps that reported
    it (in name order), handed to `consume` a batch at a time until it returns False; first `head`
    gets the apps known from their instances and the listed flags' pairs whose app has none left.
    Returns how many flags there are in all."""
    apps = await db.execute_fetchall(
        f"WITH {APPS_CTE} SELECT app_name, created_at, last_seen, strategies FROM apps ORDER BY app_name"
    )
    (flag_count,) = (await db.execute_fetchall("SELECT count(DISTINCT feature_name) FROM flag_seen"))[0]
    last = None
    if flag_count > max_flags:  # the listed flags are the ones up to the max_flags-th name
        (last,) = (await db.execute_fetchall(
            "SELECT DISTINCT feature_name FROM flag_seen ORDER BY feature_name LIMIT 1 OFFSET ?", (max_flags - 1,)))[0]
    orphans = await db.execute_fetchall(
        """SELECT feature_name, app_name, min(first_seen), max(last_seen) FROM flag_seen
            WHERE app_name NOT IN (SELECT app_name FROM instances) AND (:last IS NULL OR feature_name <= :last)
            GROUP BY feature_name, app_name""",
        {"last": last},
    )
    head([AppRow(app, created, seen, names(strategies)) for app, created, seen, strategies in apps],
         [PairSeen(*row) for row in orphans])
    # Sorted once in SQLite (no index leads with the flag), then streamed a batch at a time.
    cursor = await db.execute(
        """SELECT feature_name, json_group_array(app_name) FROM
              (SELECT DISTINCT feature_name, app_name FROM flag_seen
                WHERE :last IS NULL OR feature_name <= :last ORDER BY feature_name, app_name)
            GROUP BY feature_name ORDER BY feature_name""",
        {"last": last},
    )
    try:
        while rows := await cursor.fetchmany(SEEN_APPS_BATCH):
            if not await consume([FlagApps(flag, found) for flag, found in rows]):
                break
    finally:
        await cursor.close()
    return flag_count
