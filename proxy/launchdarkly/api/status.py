"""The LaunchDarkly room's section of the operator status (proxy/api/status/): the REST write
queue, one entry per project with writes queued, dead-lettered or paused; and the SDK event
streams, one entry per (environment or masked key, endpoint kind) with batches waiting,
dead-lettered or paused. Stream names never hold a key (proxy/launchdarkly/credentials.py).
The last hour's evaluations are the SDKs' summary events, counted under `launchdarkly:<env>`."""

from __future__ import annotations

from aiohttp import web

from proxy.api.state import SETTINGS
from proxy.api.status import queues
from proxy.api.status.schemas import VendorStatus
from proxy.launchdarkly.model.events import APP_PREFIX
from proxy.launchdarkly.model.payload import VENDOR as EVENTS_VENDOR
from proxy.launchdarkly.state import LD_EVENTS, LD_WRITES
from proxy.launchdarkly.store.queue import VENDOR
from proxy.storage.database import StatusReader
from proxy.storage.outbox_status import outbox_queues
from proxy.storage.usage import evaluations

LAUNCHDARKLY_APPS = evaluations.AppFilter((APP_PREFIX,), inside=True)


def status_source(app: web.Application):
    """The room's entry in STATUS_SOURCES; it keeps the hour's busiest flags and apps a while."""
    busiest = evaluations.Busiest(LAUNCHDARKLY_APPS)

    async def source(reader: StatusReader, now: float, live: bool = True) -> VendorStatus:
        return await section(app, reader, now, live, busiest)

    return source


async def section(app: web.Application, reader: StatusReader, now: float, live: bool = True,
                  busiest: evaluations.Busiest | None = None) -> VendorStatus:
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
    minutes = queues.last_hour(now)
    per_minute = await reader.read(evaluations.per_minute, minutes[0], LAUNCHDARKLY_APPS)
    busiest = busiest or evaluations.Busiest(LAUNCHDARKLY_APPS)
    top_flags, top_apps = await busiest.get(reader.read, minutes[0], now)
    return VendorStatus(vendor="launchdarkly", upstream=queues.redact_url(ld.api_url) if ld.upstream else None,
                        queues=entries, ingestPerMinute=queues.per_minute(minutes, per_minute),
                        topFlags=queues.usage(top_flags), topApps=queues.usage(top_apps))
