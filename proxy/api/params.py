"""Validation of path and query parameters of the read endpoints: a bad one is a 400 naming it."""

from __future__ import annotations

from aiohttp import web

from proxy.api.errors import bad_data

MAX_NAME_LENGTH = 255


def path_name(request: web.Request, name: str) -> str:
    """A path parameter, already URL-decoded by aiohttp (spaces, `%2F`, unicode)."""
    value = request.match_info[name]
    if not value or len(value) > MAX_NAME_LENGTH:
        raise bad_data(f"`{name}` must be 1 to {MAX_NAME_LENGTH} characters long", name)
    return value


def query_text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not value or len(value) > MAX_NAME_LENGTH:
        raise bad_data(f"`{name}` must be 1 to {MAX_NAME_LENGTH} characters long", name)
    return value


def query_int(request: web.Request, name: str, default: int, minimum: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_data(f"`{name}` must be an integer, got {raw!r}", name) from None
    if minimum is not None and value < minimum:
        raise bad_data(f"`{name}` must be at least {minimum}, got {value}", name)
    return value


def query_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise bad_data(f"`{name}` must be one of {', '.join(choices)}, got {value!r}", name)
    return value
