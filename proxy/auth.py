"""What every vendor's authentication shares: reading the presented token.

Each vendor decides which tokens may call what (proxy/unleash/auth.py for Unleash's
`project:environment.secret` tokens)."""

from __future__ import annotations

from aiohttp import web


def presented_token(request: web.Request) -> str:
    """The token of the Authorization header, raw or after `Bearer ` (SDKs send either)."""
    token = request.headers.get("Authorization", "").strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    return token

