"""Building the status document from every vendor room's section, and when it is `degraded`.

The one builder behind `GET /internal-backstage/status`, the page at `/` (which reads that) and
`metrics-proxy status`, so none of them can tell another story."""

from __future__ import annotations

from aiohttp import web

from proxy import __version__
from proxy.api.state import INGEST_STATS, SETTINGS, STATUS_SOURCES, STORE
from proxy.api.status.queues import last_hour, per_minute
from proxy.api.status.schemas import Degradation, StatusDocument, StoreStatus, Thresholds, VendorStatus
from proxy.config import StatusSettings
from proxy.storage.database import StatusReader


def store_status(app: web.Application, live: bool) -> StoreStatus:
    store, settings = app[STORE], app[SETTINGS]
    size = store.size_on_disk()
    limit = settings.max_db_size
    space = store.space
    return StoreStatus(
        sizeBytes=size, limitBytes=limit, fraction=round(size / limit, 4) if limit else None,
        refusingIngest=store.refusing_ingest() if live else False,
        droppedRows=dict(app[INGEST_STATS].dropped), droppedCounts=dict(space.dropped_counts) if space else {},
    )


def degradations(vendors: list[VendorStatus], store: StoreStatus, now: float,
                 limits: StatusSettings) -> list[Degradation]:
    """Why the proxy is `degraded`: a queue failing for `failing_after` seconds or more (or for an
    unknown time), a paused queue, dead letters, a store past `store_percent` of its limit or
    refusing ingest."""
    found: list[Degradation] = []
    for vendor in vendors:
        for q in vendor.queues:
            def add(cause: str, message: str, q=q, vendor=vendor) -> None:
                found.append(Degradation(cause=cause, vendor=vendor.vendor, queue=q.name,  # type: ignore[arg-type]
                                         message=message))

            if q.state == "failing" and (q.stateSince is None or now - q.stateSince >= limits.failing_after):
                add("upstream_failing", f"sending has failed for {_since(q.stateSince, now)}: {q.lastError or '-'}")
            elif q.state == "paused":
                add("paused", f"the upstream refused it: {q.pausedReason or q.lastError or '-'}")
            if q.deadLetters:
                add("dead_letters", f"{q.deadLetters} items refused for good: {q.newestDeadLetterReason or '-'}")
    if store.refusingIngest or (store.fraction is not None and store.fraction > limits.store_percent / 100):
        found.append(Degradation(cause="store_full", vendor=None, queue=None, message=(
            f"the store holds {store.sizeBytes} bytes of its {store.limitBytes}"
            + ("; new ingest is refused" if store.refusingIngest else ""))))
    return found


def _since(then: float | None, now: float) -> str:
    return "an unknown time (read from the database)" if then is None else f"{now - then:.0f} s"


async def build(app: web.Application, reader: StatusReader, now: float, live: bool = True) -> StatusDocument:
    """The document of `app`'s rooms read through `reader`; `live` False: built by a command from
    the database file, with no running process to ask about sends in flight or drops."""
    vendors = [await source(reader, now, live) for source in app[STATUS_SOURCES]]
    store = store_status(app, live)
    limits = app[SETTINGS].status
    found = degradations(vendors, store, now, limits)
    minutes = last_hour(now)
    totals = dict.fromkeys(minutes, 0)
    for vendor in vendors:
        for entry in vendor.ingestPerMinute:
            if entry.minute in totals:
                totals[entry.minute] += entry.evaluations
    return StatusDocument(
        status="degraded" if found else "healthy", degradations=found,
        thresholds=Thresholds(failingAfter=limits.failing_after, storeFraction=limits.store_percent / 100),
        generatedAt=now, source="proxy" if live else "database", version=__version__, store=store,
        ingestPerMinute=per_minute(minutes, totals), vendors=vendors,
    )
