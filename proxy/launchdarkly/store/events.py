"""SDK events in SQLite: the cut that moves stored payloads (storage's inbound_payloads, filled by
the fold) into outbox batches bounded in events and bytes, counting custom events against the
metrics of the environment's project on the way; and the reads of those counts.

One transaction per cut (Store.write): a payload is in inbound_payloads or in a batch, never both,
never neither, and its custom events are counted exactly once, in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosqlite
import msgspec

from proxy.launchdarkly.model.payload import VENDOR, BatchSpec, decode_meta, encode
from proxy.storage import payloads
from proxy.storage.outbox import OutboxItem, insert_batch

KIND_METRIC_EVENT = "custom"
UNREAD_DELETE_ROWS = 2000  # payloads deleted unread per transaction (~5 ms): the loop answers between
_split_events = msgspec.json.Decoder(list[msgspec.Raw]).decode


class _Facts(msgspec.Struct, forbid_unknown_fields=False, gc=False):
    kind: object = None
    key: object = None
    creationDate: object = None
    metricValue: object = None


_decode_facts = msgspec.json.Decoder(_Facts).decode


@dataclass(frozen=True, slots=True)
class MetricRef:
    key: str
    numeric: bool
    created: float  # epoch seconds: events received before it do not count


@dataclass(slots=True)
class CutReport:
    payloads: int = 0
    events: int = 0
    batches: int = 0
    counted: int = 0  # custom events counted against a metric
    more: bool = False
    streams: set[str] = field(default_factory=set)


def _metric_index(db: sqlite3.Connection, projects: set[str]) -> dict[tuple[str, str], list[MetricRef]]:
    """(project, eventKey) -> the metrics counting that event key."""
    index: dict[tuple[str, str], list[MetricRef]] = {}
    for project in sorted(projects):
        for key, doc in db.execute("SELECT key, doc FROM ld_metrics WHERE project = ?", (project,)):
            parsed = json.loads(doc)
            event_key = parsed.get("eventKey")
            if not isinstance(event_key, str):
                continue
            created = parsed.get("_creationDate", 0) / 1000
            index.setdefault((project, event_key), []).append(
                MetricRef(key, bool(parsed.get("isNumeric")), created))
    return index


def _any_metric_counts(db: sqlite3.Connection) -> bool:
    """Some metric has an eventKey (only those count custom events)."""
    return db.execute("SELECT EXISTS (SELECT 1 FROM ld_metrics WHERE doc LIKE '%\"eventKey\"%')").fetchone()[0] == 1


class _Batcher:
    """Open batches per (stream, spec), closed at max_events or max_bytes of body."""

    def __init__(self, db: sqlite3.Connection, now: float, new_id: Callable[[], str], max_events: int,
                 max_bytes: int, report: CutReport) -> None:
        self.db, self.now, self.new_id = db, now, new_id
        self.max_events, self.max_bytes = max_events, max_bytes
        self.report = report
        self.open: dict[tuple[str, str], tuple[list[OutboxItem], int]] = {}

    def add(self, stream: str, spec: str, item: str) -> None:
        items, size = self.open.get((stream, spec), ([], 2))
        if items and (len(items) >= self.max_events or size + len(item) + 1 > self.max_bytes):
            self._close(stream, spec, items)
            items, size = [], 2
        items.append(OutboxItem(spec, item))
        self.open[(stream, spec)] = (items, size + len(item) + 1)

    def alone(self, stream: str, spec: str, item: str) -> None:
        self._close(stream, spec, [OutboxItem(spec, item)])

    def _close(self, stream: str, spec: str, items: list[OutboxItem]) -> None:
        insert_batch(self.db, stream, self.now, items, self.new_id(), VENDOR)
        self.report.batches += 1
        self.report.streams.add(stream)

    def close_all(self) -> None:
        for (stream, spec), (items, _) in self.open.items():
            if items:
                self._close(stream, spec, items)
        self.open.clear()


def cut(db: sqlite3.Connection, now: float, forward: bool, new_id: Callable[[], str], max_events: int,
        max_bytes: int, max_payloads: int = 200) -> CutReport:
    """Move up to max_payloads stored payloads, oldest first, into batches (when `forward`; else
    they are only counted) and count their custom events. Inside the caller's transaction."""
    report = CutReport()
    if not forward:
        if not _any_metric_counts(db):  # kept only to be counted, and nothing would count them
            report.payloads = payloads.delete_oldest(db, VENDOR, UNREAD_DELETE_ROWS)
            report.more = report.payloads == UNREAD_DELETE_ROWS
            return report
        max_payloads *= 10  # mostly deleted unread: a body is read only when a metric may count it
    rows = payloads.oldest(db, VENDOR, max_payloads, with_body=forward)
    if not rows:
        return report
    metas = [decode_meta(meta) for _, _, meta, _ in rows]
    index = _metric_index(db, {meta.project for meta in metas})
    counting = {project for project, _ in index}  # projects with a metric that counts an event key
    counts: dict[tuple[str, str, str, int], list[float]] = {}
    batcher = _Batcher(db, now, new_id, max_events, max_bytes, report)
    for (row_id, stream, _, body), meta in zip(rows, metas, strict=True):
        spec = encode(BatchSpec.of(meta)).decode() if forward else ""
        if meta.diagnostic:
            if forward:
                batcher.alone(stream, spec, body.decode())
            continue
        if not forward:
            if meta.project not in counting:
                continue  # kept only to be counted, and no metric of its project counts anything
            body = payloads.body_of(db, row_id)
        for raw in _split_events(body):
            report.events += 1
            if index:
                _count(index, meta.project, meta.environment, meta.received, raw, counts)
            if forward:
                batcher.add(stream, spec, bytes(raw).decode())
    batcher.close_all()
    payloads.delete_through(db, VENDOR, rows[-1][0])
    db.executemany(
        "INSERT INTO ld_metric_events (project, metric_key, environment, hour, count, value_sum) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project, metric_key, environment, hour) DO UPDATE SET "
        "count = count + excluded.count, value_sum = value_sum + excluded.value_sum",
        [(*key, int(c), s) for key, (c, s) in counts.items()])
    report.counted = int(sum(c for c, _ in counts.values()))
    report.payloads = len(rows)
    report.more = len(rows) == max_payloads
    return report


def _count(index: dict[tuple[str, str], list[MetricRef]], project: str, environment: str, received: float,
           raw: msgspec.Raw, counts: dict[tuple[str, str, str, int], list[float]]) -> None:
    facts = _decode_facts(raw)
    if facts.kind != KIND_METRIC_EVENT or not isinstance(facts.key, str):
        return
    metrics = index.get((project, facts.key))
    if not metrics:
        return
    when = facts.creationDate / 1000 if isinstance(facts.creationDate, int | float) else received
    hour = int(when // 3600 * 3600)
    value = facts.metricValue if isinstance(facts.metricValue, int | float) else 0.0
    for metric in metrics:
        if received < metric.created:
            continue  # a metric counts the events that arrive from its definition on
        agg = counts.setdefault((project, metric.key, environment, hour), [0, 0.0])
        agg[0] += 1
        if metric.numeric:
            agg[1] += value


def prune_counts(db: sqlite3.Connection, before_hour: int) -> int:
    return db.execute("DELETE FROM ld_metric_events WHERE hour < ?", (before_hour,)).rowcount


# --- reads ---------------------------------------------------------------------------------------

async def metric_event_hours(db: aiosqlite.Connection, project: str, metric: str,
                             since_hour: int) -> list[tuple[int, str, int, float]]:
    """(hour, environment, count, sum) of a metric's events from since_hour on, newest first."""
    async with db.execute(
        "SELECT hour, environment, count, value_sum FROM ld_metric_events WHERE project = ? AND metric_key = ? "
        "AND hour >= ? ORDER BY hour DESC, environment", (project, metric, since_hour)) as cursor:
        return list(await cursor.fetchall())


def metric_event_totals(db: sqlite3.Connection) -> list[tuple[str, str, str, int, float]]:
    """(project, metric, environment, count, sum) over every stored hour, for the scrape."""
    return db.execute(
        "SELECT project, metric_key, environment, sum(count), sum(value_sum) FROM ld_metric_events "
        "GROUP BY project, metric_key, environment ORDER BY 1, 2, 3").fetchall()
