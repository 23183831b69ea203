"""The Unleash room's one upstream client: how this proxy introduces itself to Unleash, and the
cleanup context that opens the client once the store can tell the proxy's instance id."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from proxy import __version__
from proxy.clock import Clock
from proxy.config import UpstreamSettings
from proxy.storage import StorageUnavailable, Store
from proxy.storage.outbox import Outbox
from proxy.upstream.client import UpstreamClient

# The client specification version this proxy follows when it fetches flag definitions.
CLIENT_SPEC = "5.2.0"
INSTANCE_ID_KEY = "instance_id"  # outbox state: generated once, kept in the database


def instance_id(settings: UpstreamSettings, store: Store) -> str:
    """The proxy's instance id, the same across restarts; from the host name if the store is closed."""
    try:
        return Outbox(store).stable_value(INSTANCE_ID_KEY, lambda: f"{settings.app_name}@{uuid.uuid4().hex[:12]}")
    except StorageUnavailable:
        return f"{settings.app_name}@{socket.gethostname()}"


def identity(settings: UpstreamSettings, instance: str) -> dict[str, str]:
    """Headers every request to Unleash carries (an operator's `headers` override them)."""
    return {
        "UNLEASH-APPNAME": settings.app_name,
        "UNLEASH-INSTANCEID": instance,
        "Unleash-Client-Spec": CLIENT_SPEC,
        "User-Agent": f"metrics-proxy/{__version__}",
    }


def new_client(settings: UpstreamSettings, clock: Clock) -> UpstreamClient:
    """The client, not yet open; configured headers go with every request (never an Authorization:
    each request carries its own token)."""
    configured = {k: v for k, v in settings.headers.items() if k.lower() != "authorization"}
    return UpstreamClient(settings.url, settings.request_timeout, clock, configured)


def client_ctx(client: UpstreamClient, settings: UpstreamSettings, store: Store):
    """For app.cleanup_ctx, after the store's and before every user of the client."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await client.open(identity(settings, instance_id(settings, store)))
        yield
        await client.close()

    return ctx
