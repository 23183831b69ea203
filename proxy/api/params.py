"""Validation of path and query parameters of the read endpoints: a bad one is a 400 naming it."""

from __future__ import annotations

from aiohttp import web

from proxy.api.errors import bad_data

MAX_NAME_LENGTH = 255
MAX_INTEGER = 2**63 - 1  # SQLite's largest integer: a larger one cannot even be bound to a query


def _single(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once; twice is ambiguous, so a 400 rather than a guess."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_data(f"`{name}` is given {len(values)} times; give it once", name)
    return values[0] if values else None


def path_name(request: web.Request, name: str) -> str:
    """A path parameter, already URL-decoded by aiohttp (spaces, `%2F`, unicode)."""
    value = request.match_info[name]
    if not value or len(value) > MAX_NAME_LENGTH:
        raise bad_data(f"`{name}` must be 1 to {MAX_NAME_LENGTH} characters long", name)
    return value


def query_text(request: web.Request, name: str) -> str | None:
    value = _single(request, name)
    if value is None:
        return None
    if not value or len(value) > MAX_NAME_LENGTH:
        raise bad_data(f"`{name}` must be 1 to {MAX_NAME_LENGTH} characters long", name)
    return value


def query_int(request: web.Request, name: str, default: int, minimum: int | None = None) -> int:
    raw = _single(request, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_data(f"`{name}` must be an integer, got {raw!r}", name) from None
    if minimum is not None and value < minimum:
        raise bad_data(f"`{name}` must be at least {minimum}, got {value}", name)
    if value > MAX_INTEGER:
        raise bad_data(f"`{name}` must be at most {MAX_INTEGER}", name)
    return value


def query_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = _single(request, name)
    value = default if value is None else value
    if value not in choices:
        raise bad_data(f"`{name}` must be one of {', '.join(choices)}, got {value!r}", name)
    return value
