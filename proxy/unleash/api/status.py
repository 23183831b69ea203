"""The Unleash room's section of the operator status (proxy/api/status/): per environment, what
waits to be sent to the upstream Unleash and how sending goes; the evaluations of the last hour."""

from __future__ import annotations

from aiohttp import web

from proxy.api.state import SETTINGS
from proxy.api.status import queues
from proxy.api.status.schemas import VendorStatus
from proxy.storage.database import StatusReader
from proxy.storage.outbox_status import UNLEASH, outbox_queues
from proxy.storage.usage import evaluations
from proxy.storage.usage.aggregate import NOT_FORWARDED_APP_PREFIXES
from proxy.unleash.state import FORWARDER
from proxy.unleash.store import status as store_status

# Unleash's usage: every app but those another vendor's evaluations are counted under.
UNLEASH_APPS = evaluations.AppFilter(NOT_FORWARDED_APP_PREFIXES, inside=False)
NO_TOKEN = "no upstream token for this environment in [upstream] tokens: its counts stay here"


class Section:
    """The room's entry in STATUS_SOURCES; it keeps the hour's busiest flags and apps a while."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._busiest = evaluations.Busiest(UNLEASH_APPS)

    async def __call__(self, reader: StatusReader, now: float, live: bool = True) -> VendorStatus:
        settings = self.app[SETTINGS]
        forwarder = self.app.get(FORWARDER)
        stored = await reader.read(outbox_queues, UNLEASH)
        pending = await reader.read(store_status.pending_rows)
        minutes = queues.last_hour(now)
        per_minute = await reader.read(evaluations.per_minute, minutes[0], UNLEASH_APPS)
        top_flags, top_apps = await self._busiest.get(reader.read, minutes[0], now)
        environments = sorted(set(stored) | set(pending) | set(settings.upstream.tokens if settings.upstream else ()))
        entries = []
        for name in environments:
            rows, count, oldest_hour = pending.get(name, (0, 0, None))
            condition = forwarder.delivery.condition(name) if forwarder is not None else queues.NO_CONDITION
            entry = queues.queue(
                name, "environment", now, stored.get(name), upstream=forwarder is not None, condition=condition,
                pending_rows=rows, pending_count=count, pending_since=oldest_hour, live=live)
            if settings.upstream is not None and name not in settings.upstream.tokens:
                # Nothing of it can be sent (Unleash binds a client token to one environment): as good as refused.
                entry.state, entry.pausedReason = "paused", NO_TOKEN
            entries.append(entry)
        return VendorStatus(
            vendor="unleash", upstream=queues.redact_url(settings.upstream.url) if settings.upstream else None,
            queues=entries, ingestPerMinute=queues.per_minute(minutes, per_minute),
            topFlags=queues.usage(top_flags), topApps=queues.usage(top_apps),
        )
