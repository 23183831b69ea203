"""Who may call the LaunchDarkly routes: a REST access token, raw in Authorization as LaunchDarkly
takes it. With auth = "tokens" only [launchdarkly] access_tokens (SDK keys, mobile keys and Unleash
tokens are not among them: 401); with auth = "open" any non-empty token. A token is never logged.

Metric groups are a beta resource: without `LD-API-Version: beta` they answer 403, unless
[launchdarkly] require_beta_header = false."""

from __future__ import annotations

import hmac

from aiohttp import web

from proxy.auth import presented_token
from proxy.config import Settings
from proxy.launchdarkly.errors import FORBIDDEN, UNAUTHORIZED, error

API_VERSION = "LD-API-Version"
BETA = "beta"


class AccessTokens:
    def __init__(self, settings: Settings) -> None:
        self.open = settings.auth == "open"
        self.tokens = tuple(settings.launchdarkly.access_tokens)
        self.require_beta = settings.launchdarkly.require_beta_header

    def check(self, request: web.Request) -> None:
        """401 unless the request carries an accepted token."""
        token = request.headers.get("Authorization", "").strip()
        if not token:
            raise error(401, UNAUTHORIZED, "No access token in the Authorization header")
        if self.open:
            return
        # Raw as LaunchDarkly takes it; a `Bearer ` prefix is read past as everywhere in the proxy.
        token = presented_token(request)
        if not any(hmac.compare_digest(token.encode(), known.encode()) for known in self.tokens):
            raise error(401, UNAUTHORIZED, "Invalid access token")

    def check_beta(self, request: web.Request) -> None:
        """403 for a beta resource called without `LD-API-Version: beta` (when required)."""
        if self.require_beta and request.headers.get(API_VERSION, "").strip().lower() != BETA:
            raise error(403, FORBIDDEN, "Forbidden. Access to the requested resource was denied: metric groups "
                                        f"are a beta resource; send the header {API_VERSION}: {BETA}")

    @property
    def has_tokens(self) -> bool:
        return self.open or bool(self.tokens)
