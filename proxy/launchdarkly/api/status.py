"""The LaunchDarkly room's section of the operator status (proxy/api/status/): the REST write
queue, one entry per project with writes queued, dead-lettered or paused.

Another part of the room adds its entries to `section`'s list (e.g. one per SDK credential, kind
"credential", named by `queues.redact_secret`); docs/status.md says how."""

from __future__ import annotations

from aiohttp import web

from proxy.api.state import SETTINGS
from proxy.api.status import queues
from proxy.api.status.schemas import VendorStatus
from proxy.launchdarkly.state import LD_WRITES
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
    return VendorStatus(vendor="launchdarkly", upstream=queues.redact_url(ld.api_url) if ld.upstream else None,
                        queues=entries)
