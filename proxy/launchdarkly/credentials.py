"""Who may post SDK events, and which environment a post belongs to (Relay's convention): server
SDKs authenticate with an SDK key, mobile SDKs with a mobile key (both raw in `Authorization`, an
`api_key ` prefix read past as Relay does), browser SDKs name their client-side ID in the path.

auth = "tokens": only the keys of [launchdarkly.environments.*]; none is 401, an unknown one 403.
auth = "open": any key, filed under an environment named after a masked form of it (never the
whole key); the key itself is kept with the payload, since it is what the events go upstream with.
Errors are Relay's `{"message": ...}` (rendered by api/events.py for these paths)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from proxy.api.errors import ApiError
from proxy.auth import presented_token
from proxy.config import LaunchDarklyEnvironment, Settings

SERVER, MOBILE, BROWSER, IMPORT = "server", "mobile", "browser", "import"
_FIELDS = {SERVER: "sdk_key", MOBILE: "mobile_key", BROWSER: "client_side_id"}
DEFAULT_PROJECT = "default"
SCOPE_PREFIX = "launchdarkly:"  # of the Payload-IDs' idempotency scope


@dataclass(frozen=True, slots=True)
class Credential:
    environment: str
    kind: str  # server, mobile, browser, import
    project: str
    key: str | None = None  # auth = "open": the presented key, kept to send the events upstream with

    @property
    def stream(self) -> str:
        """The unit of delivery and of pauses: one credential of one environment."""
        return f"{self.environment}:{self.kind}"

    @property
    def scope(self) -> str:
        """What a repeated X-LaunchDarkly-Payload-ID is matched within (one credential)."""
        return f"{SCOPE_PREFIX}{self.stream}"


def masked(key: str) -> str:
    """A name for an unlisted key: its prefix and a digest, never the key."""
    prefix = key.split("-", 1)[0][:4] if "-" in key[:5] else "key"
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def refused(status: int, message: str) -> ApiError:
    return ApiError(status, "unauthorized" if status == 401 else "forbidden", message)


class EventCredentials:
    def __init__(self, settings: Settings) -> None:
        self.open = settings.auth == "open"
        self.environments: dict[str, LaunchDarklyEnvironment] = dict(settings.launchdarkly.environments)

    def _lookup(self, kind: str, value: str) -> str | None:
        field = _FIELDS[kind]
        for name, env in self.environments.items():
            known = getattr(env, field)
            if known is not None and hmac.compare_digest(known.encode(), value.encode()):
                return name
        return None

    def of_request(self, request: web.Request, kind: str) -> Credential:
        """The credential of a server or mobile post (401 without a key, 403 for an unknown one)."""
        key = presented_token(request)
        if key.lower().startswith("api_key "):
            key = key[8:].strip()
        if not key:
            raise refused(401, "no SDK or mobile key in the Authorization header")
        return self._resolve(kind, key)

    def of_client_side_id(self, client_side_id: str) -> Credential:
        return self._resolve(BROWSER, client_side_id)

    def _resolve(self, kind: str, value: str) -> Credential:
        name = self._lookup(kind, value)
        if name is not None:
            return Credential(name, kind, self.environments[name].project)
        if not self.open:
            what = "client-side ID" if kind == BROWSER else ("mobile key" if kind == MOBILE else "SDK key")
            raise refused(403, f"the {what} is not configured for any environment")
        # The client-side ID is public: it names its own environment.
        name = value if kind == BROWSER else masked(value)
        return Credential(name, kind, DEFAULT_PROJECT, None if kind == BROWSER else value)

    def secret_of(self, environment: str, kind: str) -> str | None:
        """The configured key a stream's events go upstream with (None for browser streams)."""
        env = self.environments.get(environment)
        if env is None or kind == BROWSER:
            return None
        return getattr(env, _FIELDS[kind])
