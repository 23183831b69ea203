"""Read queries behind the original Unleash metrics API (`/api/client/...` read shapes).

Every function folds first, so an answer includes every acknowledged count, then aggregates in SQL
on the read-only connection; Python only shapes the (already aggregated) rows into JSON.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import aiosqlite
import msgspec

from proxy.storage.store import Store
from proxy.unleash.store.queries import Windowed, leaves_window, minute_floor

SEEN_TOGGLES_WINDOW = 3600
APPLICATIONS_WINDOW = 2 * 86400


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


@lru_cache(maxsize=4096)  # answers repeat the same hours and sightings many times
def iso_ms(seconds: float) -> str:
    """Epoch seconds as Unleash prints dates: `2026-11-22T18:00:00.000Z`."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# The same format computed by SQLite, for answers whose JSON is built in SQL (epoch seconds column).
SQL_ISO_MS = "strftime('%Y-%m-%dT%H:%M:%fZ', {}, 'unixepoch')"


def json_list(text: str | None) -> list[Any]:
    return json.loads(text) if text else []


async def fresh_reader(store: Store) -> aiosqlite.Connection:
    store.fold()  # reads see every acknowledged count
    return store.reader


async def seen_toggles(store: Store, now: float) -> Windowed:
    """`[{appName, seenToggles, metricsCount}]`: flags each app reported within the last hour.

    Built as JSON by SQLite: with 100 apps x 1,000 flags, shaping 100,000 rows in Python took
    ~300 ms (bench/reads.py)."""
    db = await fresh_reader(store)
    since = now - SEEN_TOGGLES_WINDOW
    rows = await db.execute_fetchall(
        # json_group_array(DISTINCT ...) drops the same flag seen in several environments while
        # walking flag_seen_by_app in (app, flag) order: no sort, no per-pair group (71 -> 48 ms
        # with 100 apps x 1,000 flags; a covering (app, flag, last_seen) index would make it 25 ms,
        # at the price of one more index entry rewritten per flag in every fold).
        """WITH per_app AS (
                SELECT app_name, json_group_array(DISTINCT feature_name) AS toggles
                  FROM flag_seen INDEXED BY flag_seen_by_app
                 WHERE last_seen >= :since GROUP BY app_name),
            counted AS (SELECT app_name, sum(yes + no) AS total FROM minute_app_totals
                         WHERE minute >= :minute GROUP BY app_name),
            answer AS (
                SELECT per_app.app_name, per_app.toggles, coalesce(counted.total, 0) AS total
                  FROM per_app LEFT JOIN counted ON counted.app_name = per_app.app_name
                 ORDER BY per_app.app_name)
           SELECT json_group_array(json_object('appName', app_name, 'seenToggles', json(toggles),
                                               'metricsCount', total)),
                  (SELECT min(last_seen) FROM flag_seen WHERE last_seen >= :since)
             FROM answer""",
        {"since": since, "minute": minute_floor(since)},
    )
    answer, oldest = rows[0]
    # metricsCount sums whole minutes: it also moves when the next minute begins
    return Windowed(msgspec.Raw(answer.encode()),
                    leaves_window(oldest, SEEN_TOGGLES_WINDOW, minute_floor(now) + 60))


async def applications(store: Store, now: float, strategy: str | None) -> Windowed:
    """Applications seen in the last two days, optionally only those implementing `strategy`."""
    db = await fresh_reader(store)
    rows = await db.execute_fetchall(
        f"""WITH {APPS_CTE}
            SELECT app_name, strategies, created_at, last_seen FROM apps
             WHERE last_seen >= :since
               AND (:strategy IS NULL
                    OR EXISTS (SELECT 1 FROM json_each(apps.strategies) WHERE value = :strategy))
             ORDER BY app_name""",
        {"since": now - APPLICATIONS_WINDOW, "strategy": strategy},
    )
    found = [
        {
            "appName": app,
            "strategies": json_list(strategies),
            "createdAt": iso_ms(created),
            "links": {"appDetails": f"/api/client/applications/{quote(app, safe='')}"},
        }
        for app, strategies, created, _ in rows
    ]
    oldest = min((seen for *_, seen in rows), default=None)
    return Windowed({"applications": found}, leaves_window(oldest, APPLICATIONS_WINDOW))


async def application(store: Store, app: str) -> dict[str, Any] | None:
    """One application's instances, declared strategies and every flag it reported; None if unknown."""
    db = await fresh_reader(store)
    # With max(), SQLite takes the bare columns from the row holding the maximum: the latest IP.
    instances = await db.execute_fetchall(
        """SELECT instance_id, client_ip, max(last_seen) AS seen, min(created_at) FROM instances
            WHERE app_name = ? GROUP BY instance_id ORDER BY seen DESC, instance_id""",
        (app,),
    )
    toggles = await db.execute_fetchall(
        "SELECT DISTINCT feature_name FROM flag_seen WHERE app_name = ? ORDER BY feature_name", (app,)
    )
    if not instances and not toggles:
        return None
    latest = await db.execute_fetchall(
        """SELECT strategies FROM instances WHERE app_name = ? AND strategies IS NOT NULL
            ORDER BY last_seen DESC LIMIT 1""",
        (app,),
    )
    return {
        "appName": app,
        "instances": [
            {"instanceId": instance, "clientIp": ip, "lastSeen": iso_ms(seen), "createdAt": iso_ms(created)}
            for instance, ip, seen, created in instances
        ],
        "strategies": [{"appName": app, "strategies": json_list(latest[0][0] if latest else None)}],
        "seenToggles": [name for (name,) in toggles],
    }


async def seen_apps(store: Store) -> msgspec.Raw:
    """`{flag: [application]}`: for every flag still in the history, the apps that reported it.

    Built as JSON by SQLite (one entry per flag x app: 100,000 with 100 apps x 1,000 flags)."""
    db = await fresh_reader(store)
    rows = await db.execute_fetchall(
        # Every field of an entry comes from its app when the app has instances, so each app's
        # object is built once and the answer is joined as text: building 100,000 JSON objects
        # (two dates each) and re-parsing them took twice as long (bench/reads.py).
        f"""WITH {APPS_CTE},
            app_objects AS (
                -- The proxy has no application metadata; Unleash answers null until set in its UI.
                SELECT app_name, json_object(
                           'appName', app_name, 'createdAt', {SQL_ISO_MS.format("created_at")},
                           'updatedAt', {SQL_ISO_MS.format("last_seen")}, 'description', NULL,
                           'strategies', json(coalesce(strategies, '[]')), 'url', NULL, 'color', NULL,
                           'icon', NULL) AS object
                  FROM apps),
            pairs AS (
                SELECT feature_name, app_name, min(first_seen) AS created, max(last_seen) AS updated
                  FROM flag_seen GROUP BY feature_name, app_name ORDER BY feature_name, app_name),
            per_flag AS (
                -- An app whose instances were pruned before its flag sightings: dates from those.
                SELECT pairs.feature_name, group_concat(coalesce(app_objects.object, json_object(
                           'appName', pairs.app_name, 'createdAt', {SQL_ISO_MS.format("pairs.created")},
                           'updatedAt', {SQL_ISO_MS.format("pairs.updated")}, 'description', NULL,
                           'strategies', json('[]'), 'url', NULL, 'color', NULL, 'icon', NULL)), ',') AS apps
                  FROM pairs LEFT JOIN app_objects ON app_objects.app_name = pairs.app_name
                 GROUP BY pairs.feature_name ORDER BY pairs.feature_name)
           SELECT '{{' || coalesce(group_concat(json_quote(feature_name) || ':[' || apps || ']', ','), '')
                  || '}}'
             FROM per_flag"""
    )
    return msgspec.Raw(rows[0][0].encode())
