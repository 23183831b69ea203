"""Impact metrics (counter, gauge, histogram) merged per (environment, app, name, labels).

They ride in the journal entry of the post that carried them, so the same commit backs their 202;
the fold merges them into `impact_metrics` (what /internal-backstage/impact/metrics shows) and
`pending_impact_metrics` (what the forwarder sends inside bulk batches, then deletes).
Counters add, gauges take the latest value, histogram buckets add; a histogram whose bucket
bounds changed, or a metric whose type changed, starts over from the new sample (as Unleash
re-creates the metric).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import aiosqlite
import msgspec

from proxy.storage.journal import ImpactRow

ImpactKey = tuple[str, str, str, str]  # environment, app, name, labels

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ImpactRow).decode


def merge(old: ImpactRow, new: ImpactRow) -> ImpactRow:
    if old.kind != new.kind:
        return new
    if new.kind == "counter":
        return msgspec.structs.replace(new, value=old.value + new.value)
    if new.kind == "histogram":
        old_bounds = [le for le, _ in old.buckets or []]
        if old_bounds != [le for le, _ in new.buckets or []]:
            return new
        buckets = [(le, a + b) for (le, a), (_, b) in zip(old.buckets or [], new.buckets or [])]
        return msgspec.structs.replace(new, count=old.count + new.count, sum=old.sum + new.sum, buckets=buckets)
    return new  # gauge: the latest value


@dataclass(slots=True)
class ImpactDeltas:
    rows: dict[ImpactKey, ImpactRow] = field(default_factory=dict)

    def add(self, environment: str, rows: list[ImpactRow]) -> None:
        for row in rows:
            key = (environment, row.app_name, row.name, row.labels)
            known = self.rows.get(key)
            self.rows[key] = row if known is None else merge(known, row)


def write_impact(db: sqlite3.Connection, deltas: ImpactDeltas) -> None:
    """Merge the deltas into both tables inside the caller's (fold) transaction."""
    for table in ("impact_metrics", "pending_impact_metrics"):
        merged = []
        for key, row in deltas.rows.items():
            found = db.execute(
                f"SELECT row FROM {table} WHERE environment = ? AND app_name = ? AND name = ? AND labels = ?", key
            ).fetchone()
            merged.append((*key, _encode(merge(_decode(found[0]), row) if found else row)))
        db.executemany(
            f"INSERT OR REPLACE INTO {table} (environment, app_name, name, labels, row) VALUES (?, ?, ?, ?, ?)",
            merged,
        )


class SeriesGuard:
    """Which impact series exist (stored or in flight), so new ones beyond a limit can be refused
    before the post is committed. Series are never removed, so the set only grows to the limit."""

    def __init__(self, keys: set[ImpactKey]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, db: sqlite3.Connection) -> SeriesGuard:
        return cls({tuple(row) for row in db.execute("SELECT environment, app_name, name, labels FROM impact_metrics")})

    def admit(self, environment: str, rows: list[ImpactRow], limit: int) -> tuple[list[ImpactRow], int]:
        """The rows of known series plus new ones while under `limit`; and how many were refused."""
        admitted, refused = [], 0
        for row in rows:
            key = (environment, row.app_name, row.name, row.labels)
            if key not in self.keys:
                if len(self.keys) >= limit:
                    refused += 1
                    continue
                self.keys.add(key)
            admitted.append(row)
        return admitted, refused


async def all_impact(db: aiosqlite.Connection) -> list[tuple[str, ImpactRow]]:
    """(environment, row) of every merged series, ordered by name."""
    cursor = await db.execute("SELECT environment, row FROM impact_metrics ORDER BY name, environment, app_name, labels")
    return [(env, _decode(blob)) for env, blob in await cursor.fetchall()]
