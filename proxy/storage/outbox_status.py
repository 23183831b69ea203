"""What the status report reads of one vendor's part of the outbox tables, per environment (an
Unleash environment, a LaunchDarkly project's write queue): on the read-only connection; and the
few gauges a vendor's Prometheus families show of it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import aiosqlite

UNLEASH = "unleash"  # its state keys carry no vendor prefix (outbox.Outbox._key)


@dataclass(slots=True)
class OutboxQueue:
    payloads: int = 0  # batches cut and not delivered
    count: int = 0  # yes + no in their items
    oldest: float | None = None  # the oldest batch's creation
    attempts: int = 0  # failed attempts of the oldest batch
    last_error: str | None = None  # the newest error recorded on a batch
    dead_letters: int = 0
    newest_dead_letter_reason: str | None = None
    last_success: float | None = None
    paused: str | None = None


async def _rows(db: aiosqlite.Connection, sql: str, *args: object) -> list[tuple]:
    async with db.execute(sql, args) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


async def outbox_queues(db: aiosqlite.Connection, vendor: str) -> dict[str, OutboxQueue]:
    """Per environment of `vendor`: its batches, dead letters, last success and pause."""
    queues: dict[str, OutboxQueue] = {}

    def queue(name: str) -> OutboxQueue:
        return queues.setdefault(name, OutboxQueue())

    for name, payloads, oldest in await _rows(
            db, "SELECT environment, count(*), min(created) FROM outbox_batches WHERE vendor = ? "
                "GROUP BY environment", vendor):
        q = queue(name)
        q.payloads, q.oldest = payloads, oldest
    for name, attempts, error in await _rows(
            db,  # the oldest batch's attempts (the one being retried), and the error of any batch
            "SELECT environment, attempts, (SELECT last_error FROM outbox_batches e WHERE e.vendor = b.vendor "
            "AND e.environment = b.environment AND e.last_error IS NOT NULL ORDER BY seq DESC LIMIT 1) "
            "FROM outbox_batches b WHERE vendor = ? AND seq IN (SELECT min(seq) FROM outbox_batches "
            "WHERE vendor = ? GROUP BY environment)", vendor, vendor):
        q = queue(name)
        q.attempts, q.last_error = attempts, error
    for name, count in await _rows(
            db, "SELECT b.environment, sum(i.yes + i.no) FROM outbox_items i JOIN outbox_batches b "
                "ON b.seq = i.batch_seq WHERE b.vendor = ? GROUP BY b.environment", vendor):
        queue(name).count = count or 0
    for name, letters, reason in await _rows(
            db, "SELECT environment, count(*), (SELECT reason FROM dead_letters n WHERE n.vendor = d.vendor "
                "AND n.environment = d.environment ORDER BY id DESC LIMIT 1) FROM dead_letters d WHERE vendor = ? "
                "GROUP BY environment", vendor):
        q = queue(name)
        q.dead_letters, q.newest_dead_letter_reason = letters, reason
    prefix = "" if vendor == UNLEASH else f"{vendor}."
    for key, value in await _rows(
            db, "SELECT key, value FROM forwarder_state WHERE key LIKE ? OR key LIKE ?",
            f"{prefix}last_success:%", f"{prefix}paused:%"):
        kind, _, name = key.removeprefix(prefix).partition(":")
        if kind == "last_success":
            queue(name).last_success = float(value)
        else:
            queue(name).paused = value
    return queues


@dataclass(slots=True)
class QueueGauges:
    batches: int = 0
    dead_letters: int = 0
    paused: bool = False


def queue_gauges(db: sqlite3.Connection, vendor: str) -> dict[str, QueueGauges]:
    """Per environment of `vendor` (not Unleash: its state keys carry no prefix): batches waiting,
    dead letters, whether it is paused. For a scrape, on the writer's connection."""
    gauges: dict[str, QueueGauges] = {}
    for name, batches in db.execute(
            "SELECT environment, count(*) FROM outbox_batches WHERE vendor = ? GROUP BY environment", (vendor,)):
        gauges.setdefault(name, QueueGauges()).batches = batches
    for name, letters in db.execute(
            "SELECT environment, count(*) FROM dead_letters WHERE vendor = ? GROUP BY environment", (vendor,)):
        gauges.setdefault(name, QueueGauges()).dead_letters = letters
    for (key,) in db.execute("SELECT key FROM forwarder_state WHERE key LIKE ?", (f"{vendor}.paused:%",)):
        gauges.setdefault(key.partition(":")[2], QueueGauges()).paused = True
    return dict(sorted(gauges.items()))
