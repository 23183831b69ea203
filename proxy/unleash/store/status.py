"""The outbox's Unleash side as the operator status reads it (proxy/unleash/api/status.py): rows
not yet cut and the last hour's usage, on the read-only connection; and `status_report`, the same
per environment in one dict from any connection, for checks on the writer's state."""

from __future__ import annotations

import sqlite3

import aiosqlite


def status_report(db: sqlite3.Connection) -> dict:
    """Per environment what waits to be sent upstream, its last send, pause and dead letters."""
    envs: dict[str, dict] = {}

    def env(name: str) -> dict:
        return envs.setdefault(name, {
            "pending_rows": 0, "pending_yes": 0, "pending_no": 0, "batches": 0, "batch_rows": 0,
            "batch_yes": 0, "batch_no": 0, "oldest": None, "last_success": None, "paused": None,
            "dead_letters": 0,
        })

    for name, rows, yes, no, oldest_hour in db.execute(
        "SELECT environment, count(*), sum(yes), sum(no), min(hour) FROM pending_counts GROUP BY environment"
    ):
        e = env(name)
        e.update(pending_rows=rows, pending_yes=yes, pending_no=no, oldest=oldest_hour)
    for name, batches, oldest in db.execute(
        "SELECT environment, count(*), min(created) FROM outbox_batches WHERE vendor = 'unleash' "
        "GROUP BY environment"
    ):
        e = env(name)
        e["batches"] = batches
        e["oldest"] = oldest if e["oldest"] is None else min(e["oldest"], oldest)
    for name, rows, yes, no in db.execute(
        "SELECT b.environment, count(*), sum(i.yes), sum(i.no) FROM outbox_items i "
        "JOIN outbox_batches b ON b.seq = i.batch_seq WHERE i.kind = 'metric' AND b.vendor = 'unleash' "
        "GROUP BY b.environment"
    ):
        env(name).update(batch_rows=rows, batch_yes=yes, batch_no=no)
    for name, rows in db.execute(
            "SELECT environment, count(*) FROM dead_letters WHERE vendor = 'unleash' GROUP BY environment"):
        env(name)["dead_letters"] = rows
    instance_id = None
    for key, value in db.execute("SELECT key, value FROM forwarder_state"):
        kind, _, name = key.partition(":")
        if kind == "last_success":
            env(name)["last_success"] = float(value)
        elif kind == "paused":
            env(name)["paused"] = value
        elif kind == "instance_id":
            instance_id = value
    return {"instance_id": instance_id, "environments": dict(sorted(envs.items()))}


# --- the operator status document (proxy/api/status/), on the read-only connection ----------------

async def pending_rows(db: aiosqlite.Connection) -> dict[str, tuple[int, int, int]]:
    """Per environment: (rows, yes + no, oldest hour) not yet cut into batches."""
    async with db.execute("SELECT environment, count(*), sum(yes + no), min(hour) FROM pending_counts "
                          "GROUP BY environment") as cursor:
        return {row[0]: (row[1], row[2] or 0, row[3]) for row in await cursor.fetchall()}
