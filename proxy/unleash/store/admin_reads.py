"""Read queries behind the current Unleash admin shapes (`/api/admin/metrics/...`,
`/api/admin/client-metrics/...`), answered from the same store as the original shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from proxy.storage.store import Store
from proxy.unleash.store.queries import Windowed, leaves_window
from proxy.unleash.store.reads import APPS_CTE, SQL_ISO_MS, fresh_reader, iso_ms, json_list

INSTANCES_WINDOW = 86400
RAW_MAX_APPS = 100  # Unleash caps the zero-filled app list of the raw endpoint at 100
DEFAULT_PROJECT = "default"
# The proxy does not record which API an instance registered through; frontend SDKs are told apart
# by the name in their sdkVersion, as far as it is one of these.
FRONTEND_SDK_PREFIXES = ("unleash-client-js", "unleash-js-sdk", "unleash-proxy-client", "unleash-react",
                         "unleash-client-react", "unleash-android", "unleash-ios", "unleash-client-swift",
                         "unleash-flutter")
SORT_COLUMNS = {"appName": "app_name", "createdAt": "created_at", "updatedAt": "last_seen"}


def sdk_type(version: str | None) -> str:
    return "frontend" if version and version.startswith(FRONTEND_SDK_PREFIXES) else "backend"


@dataclass(frozen=True, slots=True)
class ApplicationsQuery:
    query: str | None = None
    offset: int = 0
    limit: int = 1000
    sort_by: str = "appName"
    sort_order: Literal["asc", "desc"] = "asc"


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Per app: its environments and projects, both from its instances (no projects -> "default").
_APP_DETAILS = """
    (SELECT json_group_array(environment) FROM
        (SELECT DISTINCT environment FROM instances AS i WHERE i.app_name = apps.app_name
          ORDER BY environment)) AS environments,
    (SELECT json_group_array(value) FROM
        (SELECT DISTINCT p.value FROM instances AS i, json_each(i.projects) AS p
          WHERE i.app_name = apps.app_name ORDER BY p.value)) AS projects
"""


async def applications_page(store: Store, q: ApplicationsQuery) -> dict[str, Any]:
    db = await fresh_reader(store)
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
    return {"total": total, "applications": [_application_summary(*row) for row in rows]}


def _application_summary(app: str, created: float, updated: float, strategies: str | None,
                         environments: str, projects: str) -> dict[str, Any]:
    envs = json_list(environments)
    project_names = json_list(projects) or [DEFAULT_PROJECT]
    return {
        "appName": app,
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(updated),
        "description": None,
        "strategies": json_list(strategies),
        "createdBy": "unleash_system_user",
        "url": None,
        "color": None,
        "icon": None,
        "project": project_names[0],
        "environment": envs[0] if envs else None,
        "usage": [{"project": name, "environments": envs} for name in project_names],
    }


async def application(store: Store, app: str) -> dict[str, Any] | None:
    db = await fresh_reader(store)
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
    # Unleash lists its flag definitions here; the proxy knows only what the SDKs reported: the
    # name and when it first and last saw the flag. Built as JSON by SQLite (1,000 flags per app
    # as Python dicts made this answer's p99 25 ms in bench/reads.py).
    toggles = await db.execute_fetchall(
        f"""WITH seen AS (
                SELECT feature_name, min(first_seen) AS first, max(last_seen) AS last FROM flag_seen
                 WHERE app_name = ? GROUP BY feature_name ORDER BY feature_name)
            SELECT json_group_array(json_object(
                       'name', feature_name, 'description', NULL, 'type', NULL, 'project', ?,
                       'stale', json('false'), 'createdAt', {SQL_ISO_MS.format("first")},
                       'lastSeenAt', {SQL_ISO_MS.format("last")}, 'impressionData', json('false'),
                       'archived', json('false')))
              FROM seen""",
        (app, DEFAULT_PROJECT),
    )
    return {
        "appName": app,
        "createdAt": iso_ms(created),
        "description": None,
        "url": None,
        "color": None,
        "icon": None,
        "strategies": json_list(strategies),
        "instances": [
            {
                "appName": app, "instanceId": instance, "sdkVersion": version, "sdkType": sdk_type(version),
                "clientIp": ip, "lastSeen": iso_ms(seen), "createdAt": iso_ms(first), "environment": env,
            }
            for instance, version, ip, seen, first, env in instances
        ],
        "seenToggles": msgspec.Raw(toggles[0][0].encode()),
        "links": {"self": f"/api/applications/{app}"},
    }


async def application_overview(store: Store, app: str) -> dict[str, Any] | None:
    db = await fresh_reader(store)
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
    environments: dict[str, dict[str, Any]] = {}
    for env, version, count, seen in rows:
        entry = environments.setdefault(env, {
            "name": env, "instanceCount": 0, "sdks": [], "frontendSdks": [], "backendSdks": [],
            "lastSeen": seen, "issues": {"missingFeatures": [], "outdatedSdks": []},
        })
        entry["instanceCount"] += count
        entry["lastSeen"] = max(entry["lastSeen"], seen)
        if version:
            entry["sdks"].append(version)
            entry[f"{sdk_type(version)}Sdks"].append(version)
    for entry in environments.values():
        entry["lastSeen"] = iso_ms(entry["lastSeen"])
    return {
        "projects": json_list(projects) or [DEFAULT_PROJECT],
        "featureCount": feature_count,
        "environments": list(environments.values()),
        # Which flags or strategies are missing needs Unleash's definitions; the proxy has none.
        "issues": {"missingStrategies": []},
    }


async def instances(store: Store, app: str, environment: str, now: float) -> Windowed:
    """Instances of `app` in `environment` seen in the last 24 hours, newest first."""
    db = await fresh_reader(store)
    rows = await db.execute_fetchall(
        """SELECT instance_id, client_ip, sdk_version, last_seen FROM instances
            WHERE app_name = ? AND environment = ? AND last_seen >= ?
            ORDER BY last_seen DESC, instance_id""",
        (app, environment, now - INSTANCES_WINDOW),
    )
    found = [
        {"instanceId": instance, "clientIp": ip, "sdkVersion": version, "lastSeen": iso_ms(seen)}
        for instance, ip, version, seen in rows
    ]
    oldest = rows[-1][3] if rows else None  # newest first
    return Windowed({"instances": found}, leaves_window(oldest, INSTANCES_WINDOW))


async def raw_usage(store: Store, flag: str, hours_back: int, now: float) -> Windowed:
    """One row per hour x app x environment over the last `hours_back` hours (current hour
    included), zero-filled for the apps and environments that reported the flag in that window.

    The JSON array is built by SQLite: up to 4,800 rows of Python dicts made this the slowest
    admin answer (bench/reads.py)."""
    db = await fresh_reader(store)
    newest = int(now // 3600 * 3600)
    oldest = newest - (hours_back - 1) * 3600
    rows = await db.execute_fetchall(
        f"""WITH RECURSIVE hours(hour) AS (
                SELECT :newest UNION ALL SELECT hour - 3600 FROM hours WHERE hour > :oldest),
            apps AS (SELECT DISTINCT app_name FROM hourly_counts
                      WHERE feature_name = :flag AND hour >= :oldest ORDER BY app_name LIMIT :max_apps),
            envs AS (SELECT DISTINCT environment FROM hourly_counts
                      WHERE feature_name = :flag AND hour >= :oldest ORDER BY environment),
            -- CROSS JOIN fixes the loop order (environment, app, newest hour first), which is the
            -- answer's order; an ORDER BY here made SQLite pick a plan 4x slower.
            filled AS (
                SELECT envs.environment, apps.app_name, hours.hour,
                       coalesce(c.yes, 0) AS yes, coalesce(c.no, 0) AS no,
                       coalesce(c.variants, '{{}}') AS variants
                  FROM envs CROSS JOIN apps CROSS JOIN hours
                  LEFT JOIN hourly_counts AS c
                    ON c.environment = envs.environment AND c.app_name = apps.app_name
                   AND c.feature_name = :flag AND c.hour = hours.hour)
           SELECT json_group_array(json_object(
                      'featureName', :flag, 'appName', app_name, 'environment', environment,
                      'timestamp', {SQL_ISO_MS.format("hour")}, 'yes', yes, 'no', no,
                      'variants', json(variants)))
             FROM filled""",
        {"newest": newest, "oldest": oldest, "flag": flag, "max_apps": RAW_MAX_APPS},
    )
    data = msgspec.Raw(rows[0][0].encode())
    return Windowed({"version": 1, "maturity": "stable", "data": data}, newest + 3600)


async def feature_summary(store: Store, flag: str, now: float) -> Windowed:
    """Usage per environment in the hour buckets of the last hour, and the apps that reported it."""
    db = await fresh_reader(store)
    since = now - 3600
    usage = await db.execute_fetchall(
        """SELECT environment, hour, sum(yes), sum(no) FROM hourly_counts
            WHERE feature_name = ? AND hour >= ? GROUP BY environment, hour ORDER BY environment, hour""",
        (flag, since),
    )
    apps = await db.execute_fetchall(
        """SELECT DISTINCT app_name FROM hourly_counts WHERE feature_name = ? AND hour >= ?
            ORDER BY app_name""",
        (flag, since),
    )
    # Hour buckets h >= since stay in while since <= h: until the oldest one's start is an hour ago.
    oldest_hour = -(-since // 3600) * 3600
    return Windowed({
        "version": 1,
        "maturity": "stable",
        "featureName": flag,
        "lastHourUsage": [
            {"environment": env, "timestamp": iso_ms(hour), "yes": yes, "no": no} for env, hour, yes, no in usage
        ],
        "seenApplications": [app for (app,) in apps],
    }, oldest_hour + 3600)
