"""The last hour's evaluations, per vendor, as the operator status shows them (proxy/api/status/).

The usage ledger is shared: another vendor's evaluations are counted under apps named with its
prefix (LaunchDarkly's `launchdarkly:<environment>`, aggregate.NOT_FORWARDED_APP_PREFIXES). An
`AppFilter` says whose rows a section sums: the apps with one of `prefixes` (`inside`), or the apps
with none of them (Unleash's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite

TOP = 10  # flags and apps listed by evaluations in the last hour
BUSIEST_REFRESH = 15.0  # seconds the busiest flags and apps are kept before they are summed again


@dataclass(frozen=True)
class AppFilter:
    prefixes: tuple[str, ...]
    inside: bool  # True: the apps with one of the prefixes; False: the apps with none

    def sql(self) -> tuple[str, list[str]]:
        """A condition on app_name, with its parameters."""
        if not self.prefixes:
            return ("0", []) if self.inside else ("1", [])
        any_prefix = " OR ".join("substr(app_name, 1, ?) = ?" for _ in self.prefixes)
        params = [p for prefix in self.prefixes for p in (len(prefix), prefix)]
        return (f"({any_prefix})" if self.inside else f"NOT ({any_prefix})"), params


async def per_minute(db: aiosqlite.Connection, first_minute: int, apps: AppFilter) -> dict[int, int]:
    """Evaluations per minute from `first_minute` on (apps x minutes rows)."""
    where, params = apps.sql()
    async with db.execute(f"SELECT minute, sum(yes + no) FROM minute_app_totals WHERE minute >= ? AND {where} "
                          "GROUP BY minute", (first_minute, *params)) as cursor:
        return {row[0]: row[1] for row in await cursor.fetchall()}


async def busiest(db: aiosqlite.Connection, first_minute: int, apps: AppFilter) -> tuple[list[tuple], list[tuple]]:
    """The TOP flags and apps by evaluations from `first_minute` on, as (name, evaluations). Flags
    are summed from minute_flag_totals (flags x 60 rows: 60 ms for 10,000 flags) when no app the
    filter leaves out counted in the hour, else from the filter's apps' rows of minute_counts."""
    where, params = apps.sql()
    flags_table, flags_where, flags_params = "minute_counts", where, params
    if not apps.inside and not await _counted(db, first_minute, AppFilter(apps.prefixes, inside=True)):
        flags_table, flags_where, flags_params = "minute_flag_totals", "1", []
    tops = []
    for table, column, condition, values in ((flags_table, "feature_name", flags_where, flags_params),
                                             ("minute_app_totals", "app_name", where, params)):
        async with db.execute(f"SELECT {column}, sum(yes + no) AS n FROM {table} WHERE minute >= ? AND {condition} "
                              f"GROUP BY {column} ORDER BY n DESC, {column} LIMIT ?",
                              (first_minute, *values, TOP)) as cursor:
            tops.append([tuple(row) for row in await cursor.fetchall()])
    return tops[0], tops[1]


async def _counted(db: aiosqlite.Connection, first_minute: int, apps: AppFilter) -> bool:
    where, params = apps.sql()
    async with db.execute(f"SELECT 1 FROM minute_app_totals WHERE minute >= ? AND {where} LIMIT 1",
                          (first_minute, *params)) as cursor:
        return await cursor.fetchone() is not None


class Busiest:
    """busiest() for one AppFilter, summed again at most every `refresh` seconds: the status page
    asks every few seconds, and with many flags this sum is the costly part of its document."""

    def __init__(self, apps: AppFilter, refresh: float = BUSIEST_REFRESH) -> None:
        self.apps = apps
        self.refresh = refresh
        self._last: tuple[float, tuple[list[tuple], list[tuple]]] | None = None  # (when, result)

    async def get(self, read: Callable[..., Awaitable[Any]], first_minute: int,
                  now: float) -> tuple[list[tuple], list[tuple]]:
        """`read`: how the caller runs a query (a StatusReader's `read`)."""
        if self._last is None or not 0 <= now - self._last[0] < self.refresh:
            self._last = now, await read(busiest, first_minute, self.apps)
        return self._last[1]
