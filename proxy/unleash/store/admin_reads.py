"""Queries behind the current Unleash admin shapes (`/api/admin/metrics/...`,
`/api/admin/client-metrics/...`), over the same tables as the original shapes.

Each takes the read-only connection (through Store.read) and returns rows;
proxy/unleash/api/admin_answers.py shapes them into the answer Structs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import aiosqlite
import msgspec

from proxy.unleash.store.reads import APPS_CTE, names

RAW_MAX_APPS = 100  # Unleash caps the zero-filled app list of the raw endpoint at 100
SORT_COLUMNS = {"appName": "app_name", "createdAt": "created_at", "updatedAt": "last_seen"}

_decode_variants = msgspec.json.Decoder(dict[str, int]).decode


@dataclass(frozen=True, slots=True)
class ApplicationsQuery:
    query: str | None = None
    offset: int = 0
    limit: int = 1000
    sort_by: str = "appName"
    sort_order: Literal["asc", "desc"] = "asc"


class AppSummaryRow(NamedTuple):
    app_name: str
    created_at: float
    last_seen: float
    strategies: list[str]
    environments: list[str]
    projects: list[str]


class InstanceRow(NamedTuple):
    instance_id: str
    sdk_version: str | None
    client_ip: str | None
    last_seen: float
    created_at: float
    environment: str


class FlagSeenRow(NamedTuple):
    feature_name: str
    first_seen: float
    last_seen: float


class ApplicationRows(NamedTuple):
    created_at: float
    strategies: list[str]
    instances: list[InstanceRow]
    flags: list[FlagSeenRow]  # the first max_flags by name
    flags_total: int | None  # flags reported when `flags` was cut to max_flags, else None


class SdkRow(NamedTuple):
    environment: str
    sdk_version: str | None
    instances: int
    last_seen: float


class OverviewRows(NamedTuple):
    sdks: list[SdkRow]
    projects: list[str]
    feature_count: int


class RecentInstanceRow(NamedTuple):
    instance_id: str
    client_ip: str | None
    sdk_version: str | None
    last_seen: float


class HourRow(NamedTuple):
    environment: str
    app_name: str
    hour: int
    yes: int
    no: int
    variants: dict[str, int]


class EnvironmentHourRow(NamedTuple):
    environment: str
    hour: int
    yes: int
    no: int


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Per app: its environments and projects, both from its instances.
_APP_DETAILS = """
    (SELECT json_group_array(environment) FROM
        (SELECT DISTINCT environment FROM instances AS i WHERE i.app_name = apps.app_name
          ORDER BY environment)) AS environments,
    (SELECT json_group_array(value) FROM
        (SELECT DISTINCT p.value FROM instances AS i, json_each(i.projects) AS p
          WHERE i.app_name = apps.app_name ORDER BY p.value)) AS projects
"""


async def applications_page(db: aiosqlite.Connection, q: ApplicationsQuery) -> tuple[int, list[AppSummaryRow]]:
    """(apps matching the query, the page of them asked for)."""
    params = {"pattern": _like_pattern(q.query) if q.query else None, "limit": q.limit, "offset": q.offset}
    where = "WHERE :pattern IS NULL OR app_name LIKE :pattern ESCAPE '\\'"
    (total,) = (await db.execute_fetchall(f"WITH {APPS_CTE} SELECT count(*) FROM apps {where}", params))[0]
    order = f"{SORT_COLUMNS[q.sort_by]} {q.sort_order.upper()}, app_name {q.sort_order.upper()}"
    rows = await db.execute_fetchall(
        f"""WITH {APPS_CTE}, page AS (SELECT * FROM apps {where} ORDER BY {order} LIMIT :limit OFFSET :offset)
            SELECT app_name, created_at, last_seen, strategies, {_APP_DETAILS.replace('apps.', 'page.')}
              FROM page ORDER BY {order}""",
        params,
    )
    return total, [
        AppSummaryRow(app, created, seen, names(strategies), names(envs), names(projects))
        for app, created, seen, strategies, envs, projects in rows
    ]


async def application(db: aiosqlite.Connection, app: str, max_flags: int) -> ApplicationRows | None:
    head = await db.execute_fetchall(
        f"WITH {APPS_CTE} SELECT created_at, strategies FROM apps WHERE app_name = ?", (app,)
    )
    if not head:
        return None
    created, strategies = head[0]
    instances = await db.execute_fetchall(
        """SELECT instance_id, sdk_version, client_ip, last_seen, created_at, environment FROM instances
            WHERE app_name = ? ORDER BY last_seen DESC, instance_id, environment""",
        (app,),
    )
    # Grouped while walking flag_seen_by_app in name order: SQLite stops after the flags it lists.
    flags = await db.execute_fetchall(
        """SELECT feature_name, min(first_seen), max(last_seen) FROM flag_seen
            WHERE app_name = ? GROUP BY feature_name ORDER BY feature_name LIMIT ?""",
        (app, max_flags + 1),
    )
    total = None
    if len(flags) > max_flags:
        del flags[max_flags:]
        (total,) = (await db.execute_fetchall(
            "SELECT count(DISTINCT feature_name) FROM flag_seen WHERE app_name = ?", (app,)))[0]
    return ApplicationRows(created, names(strategies), [InstanceRow(*r) for r in instances],
                           [FlagSeenRow(*r) for r in flags], total)


async def application_overview(db: aiosqlite.Connection, app: str) -> OverviewRows | None:
    rows = await db.execute_fetchall(
        """SELECT environment, sdk_version, count(*), max(last_seen) FROM instances WHERE app_name = ?
            GROUP BY environment, sdk_version ORDER BY environment, sdk_version""",
        (app,),
    )
    if not rows:
        return None
    (projects,) = (await db.execute_fetchall(
        """SELECT json_group_array(value) FROM (SELECT DISTINCT p.value FROM instances AS i,
           json_each(i.projects) AS p WHERE i.app_name = ? ORDER BY p.value)""", (app,)))[0]
    (feature_count,) = (await db.execute_fetchall(
        "SELECT count(DISTINCT feature_name) FROM flag_seen WHERE app_name = ?", (app,)))[0]
    return OverviewRows([SdkRow(*r) for r in rows], names(projects), feature_count)


async def instances(db: aiosqlite.Connection, app: str, environment: str, since: float) -> list[RecentInstanceRow]:
    """Instances of `app` in `environment` seen since `since`, newest first."""
    rows = await db.execute_fetchall(
        """SELECT instance_id, client_ip, sdk_version, last_seen FROM instances
            WHERE app_name = ? AND environment = ? AND last_seen >= ?
            ORDER BY last_seen DESC, instance_id""",
        (app, environment, since),
    )
    return [RecentInstanceRow(*r) for r in rows]


async def raw_usage(db: aiosqlite.Connection, flag: str, newest: int, oldest: int) -> list[HourRow]:
    """One row per hour x app x environment from `newest` back to `oldest` (hour starts),
    zero-filled for the apps and environments that reported the flag in that span, in the answer's
    order: environment, app, newest hour first."""
    rows = await db.execute_fetchall(
        """WITH RECURSIVE hours(hour) AS (
                SELECT :newest UNION ALL SELECT hour - 3600 FROM hours WHERE hour > :oldest),
            apps AS (SELECT DISTINCT app_name FROM hourly_counts
                      WHERE feature_name = :flag AND hour BETWEEN :oldest AND :newest
                      ORDER BY app_name LIMIT :max_apps),
            envs AS (SELECT DISTINCT environment FROM hourly_counts
                      WHERE feature_name = :flag AND hour BETWEEN :oldest AND :newest ORDER BY environment)
           -- CROSS JOIN fixes the loop order (environment, app, newest hour first), which is the
           -- answer's order; an ORDER BY here made SQLite pick a plan 4x slower.
           SELECT envs.environment, apps.app_name, hours.hour, coalesce(c.yes, 0), coalesce(c.no, 0), c.variants
             FROM envs CROSS JOIN apps CROSS JOIN hours
             LEFT JOIN hourly_counts AS c
               ON c.environment = envs.environment AND c.app_name = apps.app_name
              AND c.feature_name = :flag AND c.hour = hours.hour""",
        {"newest": newest, "oldest": oldest, "flag": flag, "max_apps": RAW_MAX_APPS},
    )
    return [HourRow(env, app, hour, yes, no, _decode_variants(variants) if variants else {})
            for env, app, hour, yes, no, variants in rows]


async def feature_summary(db: aiosqlite.Connection, flag: str, since: float,
                          until: float) -> tuple[list[EnvironmentHourRow], list[str]]:
    """Usage per environment in the hour buckets starting from `since` to `until`, and the apps behind it."""
    usage = await db.execute_fetchall(
        """SELECT environment, hour, sum(yes), sum(no) FROM hourly_counts
            WHERE feature_name = ? AND hour BETWEEN ? AND ? GROUP BY environment, hour ORDER BY environment, hour""",
        (flag, since, until),
    )
    apps = await db.execute_fetchall(
        """SELECT DISTINCT app_name FROM hourly_counts WHERE feature_name = ? AND hour BETWEEN ? AND ?
            ORDER BY app_name""",
        (flag, since, until),
    )
    return [EnvironmentHourRow(*r) for r in usage], [app for (app,) in apps]
