"""`metrics-proxy export` and `metrics-proxy import`: move a backlog by hand, as NDJSON.

For an operator whose proxy cannot deliver (its upstream is gone for good, its volume is about to
be deleted, a replica was scaled away) and who must hand what it holds to another proxy. Both work
on a stopped proxy's data folder: they take the folder's lock, which a serving proxy holds, so
neither runs beside one.

The file is one JSON object per line, each with a `kind`:
- first `metrics-proxy.export`: the format `version`, the export's `id`, when it was made, the
  source's upstream instance id and the environment asked for (null: all);
- then the records of each vendor's backlog, kinds named `<vendor>.<what>` (proxy/unleash/store/
  backlog.py has Unleash's; another vendor's store adds its own kinds to BACKLOGS);
- last `metrics-proxy.end`: how many records came before it and the usage counts they carry, so a
  cut-off file is refused whole.

Import applies a file in one transaction, or nothing of it: an unknown kind, a missing end, or an
export id this store has imported before (importing twice would count twice) stops it. Batches
keep their ids, the Idempotency-Key they are sent under.

Export leaves the source as it was, unless --move: then what was written is deleted from the
source in the same transaction, once stdout took it all, so the source cannot send it too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import IO, Any

import msgspec

from proxy.config import Settings, settings_from_args
from proxy.launchdarkly.store import backlog as launchdarkly_backlog
from proxy.storage import outbox
from proxy.unleash.store import backlog as unleash_backlog
from proxy.unleash.upstream.session import INSTANCE_ID_KEY

FORMAT_VERSION = 1
HEADER, END = "metrics-proxy.export", "metrics-proxy.end"
# Each vendor's backlog module, by the prefix of its kinds: export_records, remove_exported,
# import_record, counts, KINDS.
BACKLOGS: dict[str, ModuleType] = {"unleash.": unleash_backlog, "launchdarkly.": launchdarkly_backlog}


class ImportRefused(Exception):
    """The file cannot be imported; nothing of it was."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="TOML config file (env METRICS_PROXY_CONFIG)")
        p.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="the stopped proxy's data folder")

    p = sub.add_parser(
        "export", help="write what waits to be sent upstream as NDJSON to stdout (proxy stopped)",
        description="Write the backlog of a stopped proxy (counts not yet sent upstream, batches not yet "
                    "delivered, impact metrics) to stdout, one JSON object per line, for `metrics-proxy import` "
                    "on another proxy. Acknowledged counts not yet folded are folded first.",
    )
    common(p)
    p.add_argument("--environment", metavar="E", help="only this environment's backlog")
    p.add_argument("--move", action="store_true",
                   help="delete what was written from this store once stdout took it all")
    p.set_defaults(run=export_command)
    p = sub.add_parser(
        "import", help="take an export's backlog into this proxy's store (proxy stopped)",
        description="Add the records of FILE (from `metrics-proxy export`; - for stdin) to a stopped proxy's "
                    "store, in one transaction; it forwards them when it next runs. A file imported before, "
                    "cut off, or with records this release does not know is refused whole (exit 1).",
    )
    common(p)
    p.add_argument("file", metavar="FILE", help="the NDJSON file, or - for stdin")
    p.set_defaults(run=import_command)


def _backlog_of(kind: str) -> ModuleType | None:
    return next((m for prefix, m in BACKLOGS.items() if kind.startswith(prefix)), None)


async def _with_store(settings: Settings, body: Callable[[Any], Any]) -> Any:
    from proxy.storage import Store
    from proxy.workers.supervisor import hold_data_dir

    hold_data_dir(settings.database_path.parent)  # refuses while a proxy serves this folder
    store = Store(settings.database_path, settings.synchronous, max_db_size=settings.max_db_size,
                  forwarding=settings.upstream is not None)
    await store.open()  # replays the journal: acknowledged counts not yet folded are in the backlog too
    try:
        return body(store)
    finally:
        await store.close()


def export(store: Any, out: IO[bytes], environment: str | None, move: bool) -> dict[str, int]:
    encode = msgspec.json.Encoder().encode

    def write_all(db: Any) -> dict[str, int]:
        out.write(encode({"kind": HEADER, "version": FORMAT_VERSION, "id": uuid.uuid4().hex, "created": time.time(),
                          "source_instance": outbox.state(db, INSTANCE_ID_KEY), "environment": environment}) + b"\n")
        totals = {"records": 0, "yes": 0, "no": 0}
        for module in BACKLOGS.values():
            for record in module.export_records(db, environment):
                out.write(encode(record) + b"\n")
                yes, no = module.counts(record)
                totals["records"] += 1
                totals["yes"] += yes
                totals["no"] += no
        out.write(encode({"kind": END, **totals}) + b"\n")
        out.flush()  # raises (and so rolls back a --move) when stdout did not take it all
        if move:
            for module in BACKLOGS.values():
                module.remove_exported(db, environment)
        return totals

    return store.write(write_all)


def read_export(lines: Iterator[bytes]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the records of an export; ImportRefused unless it is whole and known."""
    records = []
    header = end = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise ImportRefused(f"line {number} is not JSON: {exc}") from None
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            raise ImportRefused(f"line {number} has no kind")
        if end is not None:
            raise ImportRefused(f"line {number} comes after the end record")
        if number == 1:
            if record["kind"] != HEADER:
                raise ImportRefused("the first line is not a metrics-proxy export header")
            if record.get("version") != FORMAT_VERSION:
                raise ImportRefused(f"export format version {record.get('version')} is not {FORMAT_VERSION}")
            header = record
        elif record["kind"] == END:
            end = record
        elif _backlog_of(record["kind"]) is None:
            raise ImportRefused(f"line {number}: this release does not know the kind {record['kind']!r}")
        else:
            records.append(record)
    if header is None:
        raise ImportRefused("the file is empty")
    if end is None or end.get("records") != len(records):
        raise ImportRefused("the file is cut off: its end record is missing or counts other records")
    return header, records


def import_records(store: Any, header: dict[str, Any], records: list[dict[str, Any]]) -> tuple[int, int]:
    """Apply the records in one transaction; returns (applied, batches already here)."""
    marker = f"imported:{header['id']}"

    def apply(db: Any) -> tuple[int, int]:
        if outbox.state(db, marker) is not None:
            raise ImportRefused(f"export {header['id']} was imported into this store before")
        applied = skipped = 0
        for record in records:
            if _backlog_of(record["kind"]).import_record(db, record):
                applied += 1
            else:
                skipped += 1
        outbox.set_state(db, marker, repr(time.time()))
        return applied, skipped

    return store.write(apply)


def export_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.database_path.exists():
        print(f"metrics-proxy: no database at {settings.database_path}", file=sys.stderr)
        return 2
    totals = asyncio.run(_with_store(settings, lambda store: export(store, sys.stdout.buffer, args.environment,
                                                                     args.move)))
    print(f"metrics-proxy: exported {totals['records']} records (yes {totals['yes']}, no {totals['no']})"
          + (", removed from this store" if args.move else ""), file=sys.stderr)
    return 0


def import_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        if args.file == "-":
            header, records = read_export(iter(sys.stdin.buffer))
        else:
            with open(args.file, "rb") as fh:
                header, records = read_export(iter(fh))
        applied, skipped = asyncio.run(_with_store(settings, lambda store: import_records(store, header, records)))
    except (ImportRefused, OSError) as exc:
        print(f"metrics-proxy: nothing imported: {exc}", file=sys.stderr)
        return 1
    print(f"metrics-proxy: imported {applied} records of export {header['id']}"
          + (f" ({skipped} batches were here already)" if skipped else "")
          + ("" if settings.upstream else "; no [upstream] is configured, so they wait until one is"),
          file=sys.stderr)
    return 0



