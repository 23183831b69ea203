"""Who may call what. Tokens use Unleash's format `project:environment.secret`.

The environment of every count comes from the token, never from the body (as Unleash does). A `*`
environment, or a token that does not follow the format, files counts under `default`.
Tokens are never logged: errors name the token's kind and environment at most.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiohttp import web

from proxy.api.errors import ApiError, unavailable
from proxy.auth import presented_token
from proxy.config import Settings
from proxy.unleash.upstream.token_validation import TokenValidator, UpstreamUnreachable

DEFAULT_ENVIRONMENT = "default"
VALIDATION_RETRY_AFTER_SECONDS = 30


class TokenKind(enum.Enum):
    CLIENT = "client"
    FRONTEND = "frontend"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Caller:
    kind: TokenKind
    environment: str
    # True when auth = "open": counts posted by bulk keep the environment of each row.
    open_mode: bool = False


def environment_of(token: str) -> str:
    head, sep, _secret = token.partition(".")
    if not sep or ":" not in head:
        return DEFAULT_ENVIRONMENT
    environment = head.split(":", 1)[1]
    return DEFAULT_ENVIRONMENT if environment in ("", "*") else environment


def projects_of(token: str) -> frozenset[str] | None:
    """The projects a token covers; None means all (`*`, or not in the project:environment format)."""
    head, sep, _secret = token.partition(".")
    if not sep or ":" not in head:
        return None
    project = head.split(":", 1)[0]
    return None if project in ("", "*") else frozenset([project])


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.open = settings.auth == "open"
        # One Caller per listed token, built once: every request with that token shares it.
        self._callers: dict[str, Caller] = {}
        for kind, tokens in (
            (TokenKind.CLIENT, settings.client_tokens),
            (TokenKind.FRONTEND, settings.frontend_tokens),
            (TokenKind.ADMIN, settings.admin_tokens),
        ):
            for token in tokens:
                self._callers[token] = Caller(kind, environment_of(token))
        self._open_callers = {kind: Caller(kind, DEFAULT_ENVIRONMENT, open_mode=True) for kind in TokenKind}
        # Set by the app when an upstream is configured: tokens not listed here are checked there.
        self.validator: TokenValidator | None = None

    def lists(self, token: str) -> bool:
        """The token is one of the configured ones (no upstream check needed)."""
        return token in self._callers

    @property
    def has_tokens(self) -> bool:
        return bool(self._callers) or self.validator is not None

    async def require(self, request: web.Request, kind: TokenKind) -> Caller:
        """The caller, if its token may use an endpoint for `kind`; else 401/403."""
        if self.open:
            return self._open_callers[kind]
        token = presented_token(request)
        if not token:
            raise ApiError(
                401,
                "AuthenticationRequired",
                "this endpoint needs an API token in the Authorization header",
            )
        listed = self._callers.get(token)
        if listed is not None and listed.kind is kind:
            return listed
        known = listed.kind if listed is not None else None
        environment = environment_of(token)
        if known is None and self.validator is not None:
            known, environment = await self._ask_upstream(token)
        if known is None:
            raise ApiError(403, "ForbiddenError", "the API token is not known to this proxy")
        if known is not kind:
            raise ApiError(
                403,
                "ForbiddenError",
                f"a {known.value} token cannot use this endpoint; it needs {_article(kind.value)} {kind.value} token",
            )
        return Caller(kind, environment)

    async def _ask_upstream(self, token: str) -> tuple[TokenKind | None, str]:
        assert self.validator is not None
        try:
            kind, environment = await self.validator.verdict(token)
        except UpstreamUnreachable:
            # 503, not 403: the SDK should retry later rather than give up on a valid token.
            raise unavailable(
                "the upstream cannot validate this token right now; retry later",
                VALIDATION_RETRY_AFTER_SECONDS,
            ) from None
        try:
            token_kind = TokenKind(kind) if kind is not None else None
        except ValueError:
            token_kind = None  # a type this proxy has no endpoints for
        if environment in (None, "", "*"):
            environment = environment_of(token)
        return token_kind, environment


def _article(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"
