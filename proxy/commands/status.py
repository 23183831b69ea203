"""`metrics-proxy status`: the operator status document, as a table or (`--json`) as it is.

It asks the running proxy on its own listener (GET /internal-backstage/status with the first admin
token), so it prints exactly what the page at `/` shows. With no proxy answering it builds the same
document with the same code (proxy/api/status/document.py) from the database file, opened
read-only: then there is no live state (sends in flight, when a failure began, drops since start)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import urllib.error
import urllib.request

import msgspec

from proxy.api.status.schemas import Queue, StatusDocument
from proxy.config import Settings

ASK_TIMEOUT = 5.0  # seconds to wait for the running proxy's answer
QUEUE_COLUMNS = ("QUEUE", "STATE", "ROWS", "COUNT", "PAYLOADS", "OLDEST", "LAST SENT", "DEAD", "NOTE")


def ask_running_proxy(settings: Settings) -> bytes | None:
    """The running proxy's document; None when no proxy answers on its listener."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    request = urllib.request.Request(f"http://{host}:{settings.port}/internal-backstage/status")
    if settings.admin_tokens:
        request.add_header("Authorization", settings.admin_tokens[0])
    try:
        with urllib.request.urlopen(request, timeout=ASK_TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError):
        return None


async def from_database(settings: Settings) -> StatusDocument:
    """The document built from the database file by the app's own sections (the app is created,
    never started: nothing is opened but the file, read-only)."""
    from proxy.api.status.document import build
    from proxy.app import create_app
    from proxy.storage.database import ReadOnlyFile

    logging.disable(logging.WARNING)  # what the app says of its settings is for `serve`'s log
    try:
        app = create_app(settings)
    finally:
        logging.disable(logging.NOTSET)
    async with ReadOnlyFile(settings.database_path) as reader:
        return await build(app, reader, time.time(), live=False)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        answer = ask_running_proxy(settings)
    except urllib.error.HTTPError as exc:
        print(f"metrics-proxy: the proxy answered {exc.code}: {exc.read()[:300].decode(errors='replace')}",
              file=sys.stderr)
        return 2
    if answer is not None:
        document = msgspec.json.decode(answer, type=StatusDocument)
    else:
        if not settings.database_path.exists():
            print(f"metrics-proxy: no proxy answers on port {settings.port} and there is no database at "
                  f"{settings.database_path}", file=sys.stderr)
            return 2
        try:
            document = asyncio.run(from_database(settings))
        except Exception as exc:  # e.g. a database from before the outbox existed
            print(f"metrics-proxy: cannot read the status from {settings.database_path}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(msgspec.to_builtins(document), indent=2))
    else:
        print("\n".join(table(document)))
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _bytes(n: int | None) -> str:
    if n is None:
        return "unbounded"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _note(q: Queue, now: float) -> str:
    if q.state == "paused":
        return f"paused: {q.pausedReason or q.lastError or '-'}"
    if q.state == "failing":
        since = "" if q.stateSince is None else f" for {_age(now - q.stateSince)}"
        return f"failing{since}: {q.lastError or '-'}"
    if q.deadLetters:
        return f"newest dead letter: {q.newestDeadLetterReason or '-'}"
    return ""


def table(doc: StatusDocument) -> list[str]:
    """The document as text: the verdict and its causes, the store, the ingest, then per vendor its
    queues in columns and its busiest flags and apps."""
    where = "from the running proxy" if doc.source == "proxy" else "read from the database file, no proxy answered"
    lines = [f"status: {doc.status.upper()} ({where}, metrics-proxy {doc.version})"]
    lines += [f"  - {d.cause}{' ' + d.vendor if d.vendor else ''}{'/' + d.queue if d.queue else ''}: {d.message[:200]}"
              for d in doc.degradations]
    s = doc.store
    share = "" if s.fraction is None else f" ({s.fraction * 100:.1f} %)"
    lines.append(f"store: {_bytes(s.sizeBytes)} of {_bytes(s.limitBytes)}{share}"
                 + ("; refusing ingest" if s.refusingIngest else ""))
    for name, counts in (("dropped rows", s.droppedRows), ("dropped counts", s.droppedCounts)):
        if counts:
            lines.append(f"{name}: " + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())))
    counts = [m.evaluations for m in doc.ingestPerMinute]
    lines.append(f"ingest, last 60 minutes: {sum(counts)} evaluations, this minute {counts[-1] if counts else 0}, "
                 f"busiest minute {max(counts, default=0)}")
    for vendor in doc.vendors:
        lines.append("")
        lines.append(f"{vendor.vendor}: {'sends to ' + vendor.upstream if vendor.upstream else 'no upstream'}")
        if not vendor.queues:
            lines.append("  nothing pending")
        else:
            rows = [QUEUE_COLUMNS] + [
                (q.name, q.state, str(q.pendingRows), str(q.pendingCount), str(q.pendingPayloads),
                 _age(q.oldestPendingAge), "-" if q.lastSuccess is None else _age(doc.generatedAt - q.lastSuccess) + " ago",
                 str(q.deadLetters), _note(q, doc.generatedAt)[:120])
                for q in vendor.queues
            ]
            widths = [max(len(row[i]) for row in rows) for i in range(len(QUEUE_COLUMNS) - 1)]
            for row in rows:
                lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        for title, entries in (("top flags", vendor.topFlags), ("top apps", vendor.topApps)):
            if entries:
                lines.append(f"  {title}, last hour: " + ", ".join(f"{e.name} {e.evaluations}" for e in entries))
    return [line.rstrip() for line in lines]
