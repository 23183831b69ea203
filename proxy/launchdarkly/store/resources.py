"""Metrics and metric groups in SQLite: each stored as its JSON representation, keyed by project
and key. Every version of a metric is kept (GET ?versionId=); the metrics a group uses are listed
beside it, so that deleting a used metric is refused in the same transaction that would do it.

Write functions run inside Store.write (one transaction); a `change` callback they are given turns
the current document into the new one there, so a read-modify-write cannot interleave with another.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

import aiosqlite


class KeyTaken(Exception):
    """A resource with that key already exists in the project."""


class Missing(Exception):
    """No such resource in the project."""


class InUse(Exception):
    """The metric is used by these metric groups."""

    def __init__(self, groups: tuple[str, ...]) -> None:
        super().__init__(", ".join(groups))
        self.groups = groups


# --- reads (the read-only connection) --------------------------------------------------------------

async def metric_docs(db: aiosqlite.Connection, project: str) -> list[bytes]:
    async with db.execute("SELECT doc FROM ld_metrics WHERE project = ?", (project,)) as cursor:
        return [row[0].encode() for row in await cursor.fetchall()]


async def metric_doc(db: aiosqlite.Connection, project: str, key: str, version_id: str | None = None) -> bytes | None:
    if version_id is None:
        sql, args = "SELECT doc FROM ld_metrics WHERE project = ? AND key = ?", (project, key)
    else:
        sql = "SELECT doc FROM ld_metric_versions WHERE project = ? AND key = ? AND version_id = ?"
        args = (project, key, version_id)
    async with db.execute(sql, args) as cursor:
        row = await cursor.fetchone()
    return None if row is None else row[0].encode()


async def group_docs(db: aiosqlite.Connection, project: str) -> list[bytes]:
    async with db.execute("SELECT doc FROM ld_metric_groups WHERE project = ?", (project,)) as cursor:
        return [row[0].encode() for row in await cursor.fetchall()]


async def group_doc(db: aiosqlite.Connection, project: str, key: str) -> bytes | None:
    async with db.execute("SELECT doc FROM ld_metric_groups WHERE project = ? AND key = ?", (project, key)) as cursor:
        row = await cursor.fetchone()
    return None if row is None else row[0].encode()


async def groups_using(db: aiosqlite.Connection, project: str) -> dict[str, list[str]]:
    """Metric key -> keys of the groups that use it."""
    found: dict[str, list[str]] = {}
    async with db.execute(
        "SELECT metric_key, group_key FROM ld_group_metrics WHERE project = ? ORDER BY group_key", (project,)
    ) as cursor:
        for metric, group in await cursor.fetchall():
            found.setdefault(metric, []).append(group)
    return found


async def group_with_metrics(db: aiosqlite.Connection, project: str, key: str) -> tuple[bytes, list[bytes]] | None:
    """A group's document and the documents of the metrics it uses (those still in the project)."""
    doc = await group_doc(db, project, key)
    if doc is None:
        return None
    return doc, await _used_metrics(db, project, [key])


async def groups_with_metrics(db: aiosqlite.Connection, project: str) -> tuple[list[bytes], list[bytes]]:
    """Every group's document of the project and every metric document they use."""
    async with db.execute("SELECT doc FROM ld_metric_groups WHERE project = ?", (project,)) as cursor:
        docs = [row[0].encode() for row in await cursor.fetchall()]
    async with db.execute(
        "SELECT m.doc FROM ld_metrics m WHERE m.project = ? AND EXISTS "
        "(SELECT 1 FROM ld_group_metrics g WHERE g.project = m.project AND g.metric_key = m.key)", (project,)
    ) as cursor:
        metrics = [row[0].encode() for row in await cursor.fetchall()]
    return docs, metrics


async def _used_metrics(db: aiosqlite.Connection, project: str, groups: list[str]) -> list[bytes]:
    marks = ",".join("?" * len(groups))
    async with db.execute(
        f"SELECT DISTINCT m.doc FROM ld_group_metrics g JOIN ld_metrics m ON m.project = g.project "
        f"AND m.key = g.metric_key WHERE g.project = ? AND g.group_key IN ({marks})", (project, *groups)
    ) as cursor:
        return [row[0].encode() for row in await cursor.fetchall()]


# --- writes (inside Store.write's transaction) ---------------------------------------------------

def _metric_row(db: sqlite3.Connection, project: str, key: str) -> str | None:
    row = db.execute("SELECT doc FROM ld_metrics WHERE project = ? AND key = ?", (project, key)).fetchone()
    return None if row is None else row[0]


def existing_metric_keys(db: sqlite3.Connection, project: str, keys: Iterable[str]) -> dict[str, str]:
    """Key -> document of those of `keys` that are metrics of the project."""
    found = {}
    for key in set(keys):
        doc = _metric_row(db, project, key)
        if doc is not None:
            found[key] = doc
    return found


def put_metric(db: sqlite3.Connection, project: str, key: str, version_id: str, doc: bytes) -> None:
    """Store a metric's current document and keep it as one of its versions."""
    text = doc.decode()
    db.execute(
        "INSERT INTO ld_metrics (project, key, doc, version_id) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (project, key) DO UPDATE SET doc = excluded.doc, version_id = excluded.version_id",
        (project, key, text, version_id),
    )
    db.execute(
        "INSERT INTO ld_metric_versions (project, key, version_id, doc) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO UPDATE SET doc = excluded.doc",
        (project, key, version_id, text),
    )


def create_metric(db: sqlite3.Connection, project: str, key: str, version_id: str, doc: bytes) -> bytes:
    if _metric_row(db, project, key) is not None:
        raise KeyTaken(key)
    put_metric(db, project, key, version_id, doc)
    return doc


def change_metric(db: sqlite3.Connection, project: str, key: str,
                  change: Callable[[bytes], tuple[str, bytes]]) -> bytes:
    """Replace a metric by `change(current document)` -> (new version id, new document)."""
    current = _metric_row(db, project, key)
    if current is None:
        raise Missing(key)
    version_id, doc = change(current.encode())
    put_metric(db, project, key, version_id, doc)
    return doc


def delete_metric(db: sqlite3.Connection, project: str, key: str) -> None:
    """Delete a metric and its versions; refused (InUse) while a group uses it."""
    if _metric_row(db, project, key) is None:
        raise Missing(key)
    groups = [r[0] for r in db.execute(
        "SELECT group_key FROM ld_group_metrics WHERE project = ? AND metric_key = ? ORDER BY 1", (project, key))]
    if groups:
        raise InUse(tuple(groups))
    forget_metric(db, project, key)


def forget_metric(db: sqlite3.Connection, project: str, key: str) -> None:
    db.execute("DELETE FROM ld_metrics WHERE project = ? AND key = ?", (project, key))
    db.execute("DELETE FROM ld_metric_versions WHERE project = ? AND key = ?", (project, key))


def _group_row(db: sqlite3.Connection, project: str, key: str) -> str | None:
    row = db.execute("SELECT doc FROM ld_metric_groups WHERE project = ? AND key = ?", (project, key)).fetchone()
    return None if row is None else row[0]


def put_group(db: sqlite3.Connection, project: str, key: str, doc: bytes, metric_keys: Iterable[str]) -> None:
    db.execute(
        "INSERT INTO ld_metric_groups (project, key, doc) VALUES (?, ?, ?) "
        "ON CONFLICT (project, key) DO UPDATE SET doc = excluded.doc",
        (project, key, doc.decode()),
    )
    db.execute("DELETE FROM ld_group_metrics WHERE project = ? AND group_key = ?", (project, key))
    db.executemany(
        "INSERT OR IGNORE INTO ld_group_metrics (project, metric_key, group_key) VALUES (?, ?, ?)",
        [(project, metric, key) for metric in metric_keys],
    )


def create_group(db: sqlite3.Connection, project: str, key: str,
                 make: Callable[[dict[str, bytes]], tuple[bytes, list[str]]], metric_keys: list[str]) -> bytes:
    """Create a group: `make(metric documents by key)` -> (document, the metric keys it uses)."""
    if _group_row(db, project, key) is not None:
        raise KeyTaken(key)
    metrics = {k: v.encode() for k, v in existing_metric_keys(db, project, metric_keys).items()}
    doc, used = make(metrics)
    put_group(db, project, key, doc, used)
    return doc


def change_group(db: sqlite3.Connection, project: str, key: str,
                 change: Callable[[bytes, Callable[[Iterable[str]], dict[str, bytes]]], tuple[bytes, list[str]]]) -> bytes:
    """Replace a group by `change(current document, look up metrics by key)` -> (document, metric keys)."""
    current = _group_row(db, project, key)
    if current is None:
        raise Missing(key)

    def lookup(keys: Iterable[str]) -> dict[str, bytes]:
        return {k: v.encode() for k, v in existing_metric_keys(db, project, keys).items()}

    doc, used = change(current.encode(), lookup)
    put_group(db, project, key, doc, used)
    return doc


def delete_group(db: sqlite3.Connection, project: str, key: str) -> None:
    if _group_row(db, project, key) is None:
        raise Missing(key)
    forget_group(db, project, key)


def forget_group(db: sqlite3.Connection, project: str, key: str) -> None:
    db.execute("DELETE FROM ld_metric_groups WHERE project = ? AND key = ?", (project, key))
    db.execute("DELETE FROM ld_group_metrics WHERE project = ? AND group_key = ?", (project, key))


def replace_project(db: sqlite3.Connection, project: str, metrics: list[tuple[str, str, bytes]],
                    groups: list[tuple[str, bytes, list[str]]], now: float) -> bool:
    """Make the project's local copy what LaunchDarkly holds: `metrics` as (key, version id,
    document), `groups` as (key, document, metric keys). Not while writes of the project wait in
    the queue (they are the newer truth): then nothing changes and the answer is False."""
    if db.execute("SELECT 1 FROM outbox_batches WHERE vendor = 'launchdarkly' AND environment = ? LIMIT 1",
                  (project,)).fetchone() is not None:
        return False
    keep = {key for key, _, _ in metrics}
    for (key,) in db.execute("SELECT key FROM ld_metrics WHERE project = ?", (project,)).fetchall():
        if key not in keep:
            forget_metric(db, project, key)
    for key, version_id, doc in metrics:
        put_metric(db, project, key, version_id, doc)
    keep = {key for key, _, _ in groups}
    for (key,) in db.execute("SELECT key FROM ld_metric_groups WHERE project = ?", (project,)).fetchall():
        if key not in keep:
            forget_group(db, project, key)
    for key, doc, metric_keys in groups:
        put_group(db, project, key, doc, metric_keys)
    db.execute("INSERT INTO ld_projects (project, refreshed) VALUES (?, ?) "
               "ON CONFLICT (project) DO UPDATE SET refreshed = excluded.refreshed", (project, now))
    return True
