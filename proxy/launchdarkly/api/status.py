"""The LaunchDarkly room's section of the operator status (proxy/api/status/): the REST write
queue, one entry per project with writes queued, dead-lettered or paused; and the SDK event
streams, one entry per (environment or masked key, endpoint kind) with batches waiting,
dead-lettered or paused. Stream names never hold a key (proxy/launchdarkly/credentials.py)."""

from __future__ import annotations

from aiohttp import web

from proxy.api.state import SETTINGS
from proxy.api.status import queues
from proxy.api.status.schemas import VendorStatus
from proxy.launchdarkly.model.payload import VENDOR as EVENTS_VENDOR
from proxy.launchdarkly.state import LD_EVENTS, LD_WRITES
from proxy.launchdarkly.store.queue import VENDOR
from proxy.storage.database import StatusReader
from proxy.storage.outbox_status import outbox_queues


async def section(app: web.Application, reader: StatusReader, now: float, live: bool = True) -> VendorStatus:
    ld = app[SETTINGS].launchdarkly
    delivery = app[LD_WRITES].delivery
    stored = await reader.read(outbox_queues, VENDOR)
    entries = [
        queues.queue(project, "project", now, stored[project], upstream=ld.upstream,
                     condition=delivery.condition(project) if delivery is not None else queues.NO_CONDITION,
                     live=live)
        for project in sorted(stored)
    ]
    events = app[LD_EVENTS].delivery
    streams = await reader.read(outbox_queues, EVENTS_VENDOR)
    entries += [
        queues.queue(stream, "credential", now, streams[stream], upstream=ld.events,
                     condition=events.condition(stream) if events is not None else queues.NO_CONDITION,
                     live=live)
        for stream in sorted(streams)
    ]
    return VendorStatus(vendor="launchdarkly", upstream=queues.redact_url(ld.api_url) if ld.upstream else None,
                        queues=entries)
