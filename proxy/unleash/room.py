"""The Unleash room wired into the app: its state, its background parts, its routes and what it adds
to readiness, the Prometheus scrape and /openapi.json.

Called by the app factory after the store's cleanup context is added, so everything here starts
once the store is open and stops before it closes."""

from __future__ import annotations

import functools
import logging

from aiohttp import web

from proxy.api.state import CLOCK, READINESS_CHECKS, REGISTRY, SCRAPE_SOURCES, SETTINGS, STATUS_SOURCES, STORE
from proxy.forwarding.stats import ForwarderStats
from proxy.observability.telemetry import ForwarderCollector
from proxy.unleash.api import admin, client, custom, features, flush, impact_scrape, reads, scrape, status
from proxy.unleash.api.openapi_operations import OPERATIONS, RAW_FIELD_TYPES
from proxy.unleash.auth import Authenticator
from proxy.unleash.feature_source import cache_for, features_ctx, source_for
from proxy.unleash.features.telemetry import FeatureCollector
from proxy.unleash.state import AUTH, FEATURE_CACHE, FEATURE_SOURCE, FORWARDER, FORWARDER_STATS, UPSTREAM
from proxy.unleash.upstream import forwarder, session
from proxy.unleash.upstream.token_validation import TokenValidator

log = logging.getLogger(__name__)

ROUTE_GROUPS = (features, client, reads, admin, flush, custom, impact_scrape)
__all__ = ["OPERATIONS", "RAW_FIELD_TYPES", "install"]


def install(app: web.Application) -> list[web.RouteDef]:
    """Set up the Unleash room in `app`; returns its routes."""
    settings, clock, store = app[SETTINGS], app[CLOCK], app[STORE]
    app[AUTH] = Authenticator(settings)
    app[FORWARDER_STATS] = ForwarderStats()
    app[REGISTRY].register(ForwarderCollector(app[FORWARDER_STATS]))
    client = None
    if settings.upstream is not None:
        # One client for forwarding, token validation and feature polling: one identity upstream.
        client = app[UPSTREAM] = session.new_client(settings.upstream, clock)
        app.cleanup_ctx.append(session.client_ctx(client, settings.upstream, store))  # closes after its users stop
        if settings.auth == "tokens":
            validator = TokenValidator(client, settings.upstream.request_timeout,
                                       settings.token_revalidation_interval, store, clock)
            app[AUTH].validator = validator
            app.on_cleanup.append(validator.close)
        app[FORWARDER] = forwarder.Forwarder(settings, store, clock, app[FORWARDER_STATS], client=client)
        app.cleanup_ctx.append(forwarder.cleanup_context(app[FORWARDER]))
    app[FEATURE_CACHE] = cache_for(settings, clock)
    app[FEATURE_SOURCE] = source_for(settings, app[FEATURE_CACHE], client)
    app[REGISTRY].register(FeatureCollector(app[FEATURE_CACHE]))
    app.cleanup_ctx.append(features_ctx)  # after the store's: it serves the stored documents
    app[READINESS_CHECKS].append(functools.partial(_features_ready, app))
    app[SCRAPE_SOURCES].append(functools.partial(scrape.store_families, app))
    app[STATUS_SOURCES].append(status.Section(app))
    if settings.auth == "tokens" and not app[AUTH].has_tokens:
        log.warning(
            "auth = \"tokens\" but no tokens are configured: every API request will get 403. "
            "Set client_tokens / admin_tokens, or auth = \"open\" for local development."
        )
    return [route for group in ROUTE_GROUPS for route in group.routes()]


def _features_ready(app: web.Application) -> str | None:
    if not app[FEATURE_CACHE].ready():
        return "no feature definitions yet for every configured environment (upstream not reached)"
    return None
