"""List parameters of both collections: limit and offset, sort, filter and expand, and the page
links. Pure functions of the query and the project's documents (filtered and sorted here: a
project holds hundreds of metrics, not millions)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.api.errors import ApiError
from proxy.launchdarkly.errors import invalid
from proxy.launchdarkly.schemas.common import Link

DEFAULT_LIMIT = 20
MAX_LIMIT = 50
# Characters. aiohttp reads a request line of at most 8190 bytes, and one character may take 12
# once URL-encoded: the filter, sort, expand and versionId together must stay under it.
MAX_FILTER_LENGTH = 400

Value = str | list[str]


@dataclass(frozen=True, slots=True)
class Clause:
    field: str
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


MAX_PARAMETER_LENGTH = 64  # characters of sort, expand and versionId


def single(request: web.Request, name: str, max_length: int = MAX_PARAMETER_LENGTH) -> str | None:
    """A query parameter given at most once, of at most `max_length` characters."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise invalid(f"`{name}` is given {len(values)} times; give it once")
    if values and len(values[0]) > max_length:
        raise invalid(f"`{name}` is longer than {max_length} characters")
    return values[0] if values else None


def integer(request: web.Request, name: str, default: int) -> int:
    raw = single(request, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(f"`{name}` must be an integer, got {raw[:40]!r}") from None


def page(request: web.Request) -> Page:
    """`limit` (default 20, 1 to 50: more is a 400) and `offset` (0 or more)."""
    limit = integer(request, "limit", DEFAULT_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid(f"`limit` must be between 1 and {MAX_LIMIT}, got {limit}")
    offset = integer(request, "offset", 0)
    if offset < 0:
        raise invalid(f"`offset` must be 0 or more, got {offset}")
    return Page(limit, offset)


def expand(request: web.Request, allowed: Sequence[str] | None) -> set[str]:
    """The `expand` names (comma-separated); one not in `allowed` is a 400 naming it (None: any is
    accepted and none changes the answer, as LaunchDarkly says of the metric-group list)."""
    raw = single(request, "expand")
    names = {part.strip() for part in (raw or "").split(",") if part.strip()}
    if allowed is not None:
        for name in sorted(names):
            if name not in allowed:
                raise invalid(f"unknown expand `{name[:60]}`: this endpoint expands {', '.join(allowed)}")
    return names


def sort_keys(request: web.Request, fields: Sequence[str]) -> list[tuple[str, bool]]:
    """`sort`: comma-separated fields, `-` before one for descending; a field not in `fields` is a 400."""
    raw = single(request, "sort")
    order = []
    for part in (raw or "").split(","):
        part = part.strip()
        if not part:
            continue
        descending = part.startswith("-")
        name = part.lstrip("-")
        if name not in fields:
            raise invalid(f"unknown sort field `{name[:60]}`: sort by {', '.join(fields)}")
        order.append((name, descending))
    return order


def sorted_docs(docs: list[dict[str, Any]], order: list[tuple[str, bool]],
                values: Mapping[str, Callable[[dict[str, Any]], Any]], default: list[tuple[str, bool]]) -> list[dict]:
    """`docs` in the asked order, then by key, so that pages never overlap or skip."""
    result = sorted(docs, key=lambda d: d["key"])
    for name, descending in reversed(order or default):
        result.sort(key=values[name], reverse=descending)
    return result


# --- filter ---------------------------------------------------------------------------------------

class _Reader:
    """Reads `field op value` clauses joined by ` and ` or commas. Values are bare words, quoted
    strings ('...' or "...", a backslash escapes the next character) or lists `[v, v]` of those."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def fail(self, message: str) -> ApiError:
        return invalid(f"invalid filter at character {self.at}: {message}")

    def spaces(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def done(self) -> bool:
        self.spaces()
        return self.at >= len(self.text)

    def word(self, what: str) -> str:
        self.spaces()
        start = self.at
        while self.at < len(self.text) and not self.text[self.at].isspace() and self.text[self.at] not in ",[]'\"":
            self.at += 1
        if start == self.at:
            raise self.fail(f"expected {what}")
        return self.text[start:self.at]

    def quoted(self) -> str:
        quote = self.text[self.at]
        self.at += 1
        out = []
        while self.at < len(self.text):
            char = self.text[self.at]
            if char == "\\" and self.at + 1 < len(self.text):
                out.append(self.text[self.at + 1])
                self.at += 2
                continue
            self.at += 1
            if char == quote:
                return "".join(out)
            out.append(char)
        raise self.fail("a quoted value is not closed")

    def scalar(self) -> str:
        self.spaces()
        if self.at < len(self.text) and self.text[self.at] in "'\"":
            return self.quoted()
        return self.word("a value")

    def value(self) -> Value:
        self.spaces()
        if self.at < len(self.text) and self.text[self.at] == "[":
            self.at += 1
            items: list[str] = []
            self.spaces()
            if self.at < len(self.text) and self.text[self.at] == "]":
                self.at += 1
                return items
            while True:
                items.append(self.scalar())
                self.spaces()
                if self.at >= len(self.text):
                    raise self.fail("a list is not closed with `]`")
                if self.text[self.at] == ",":
                    self.at += 1
                    continue
                if self.text[self.at] == "]":
                    self.at += 1
                    return items
                raise self.fail("expected `,` or `]` in a list")
        return self.scalar()

    def joiner(self) -> None:
        """Past the `,` or ` and ` between two clauses."""
        self.spaces()
        if self.text.startswith(",", self.at):
            self.at += 1
            return
        if self.text.startswith("and", self.at) and (self.at + 3 == len(self.text) or self.text[self.at + 3].isspace()):
            self.at += 3
            return
        raise self.fail("expected ` and ` or `,` between clauses")


def parse_filter(text: str | None) -> list[Clause]:
    """The clauses of a `filter` (already URL-decoded by aiohttp: `%5B` is `[`)."""
    if text is None or not text.strip():
        return []
    reader = _Reader(text)
    clauses = []
    while True:
        field = reader.word("a field name")
        op = reader.word(f"an operator after `{field[:60]}`")
        clauses.append(Clause(field, op, reader.value()))
        if reader.done():
            return clauses
        reader.joiner()


@dataclass(frozen=True, slots=True)
class FilterField:
    op: str
    test: Callable[[dict[str, Any], Value], bool]
    values: tuple[str, ...] | None = None  # the values it may take, when it has a fixed set


def read_filter(request: web.Request, fields: Mapping[str, FilterField]) -> Callable[[dict[str, Any]], bool]:
    """The `filter` as a test of one document; an unknown field, operator or value is a 400 naming it."""
    clauses = parse_filter(single(request, "filter", MAX_FILTER_LENGTH))
    tests = []
    for clause in clauses:
        spec = fields.get(clause.field)
        if spec is None:
            raise invalid(f"unknown filter field `{clause.field[:60]}`: filter by {', '.join(sorted(fields))}")
        if clause.op != spec.op:
            raise invalid(f"unknown operator `{clause.op[:60]}` for filter field `{clause.field}`: use {spec.op}")
        if spec.values is not None:
            for value in as_list(clause.value):
                if value not in spec.values:
                    raise invalid(f"invalid value {value[:60]!r} for filter field `{clause.field}`: one of "
                                  f"{', '.join(spec.values)}")
        tests.append((spec.test, clause.value))
    return lambda doc: all(test(doc, value) for test, value in tests)


def as_list(value: Value) -> list[str]:
    """A list value as it is; a bare or quoted one may hold several, comma-separated."""
    if isinstance(value, list):
        return value
    return [part.strip() for part in value.split(",") if part.strip()]


def fuzzy(doc: dict[str, Any], value: Value) -> bool:
    """`query`: any of the words is in the key or the name, ignoring case."""
    words = [value] if isinstance(value, str) else value
    haystack = f"{doc.get('key', '')}\n{doc.get('name', '')}".casefold()
    return any(word.casefold() in haystack for word in words)


BOOLEANS = ("true", "false")


def truth(value: Value) -> bool:
    return (value[0] if isinstance(value, list) and value else value) == "true"


# --- the page and its links -----------------------------------------------------------------------

def page_links(path: str, request: web.Request, current: Page, total: int) -> dict[str, Link]:
    """self, first, last, and prev / next where there is such a page: `/api/v2/...` hrefs that keep
    the request's filter, sort and expand."""
    kept = [(name, request.query[name]) for name in ("filter", "sort", "expand") if name in request.query]

    def href(offset: int) -> Link:
        query = urllib.parse.urlencode([*kept, ("limit", current.limit), ("offset", offset)],
                                       quote_via=urllib.parse.quote)
        return Link(href=f"{path}?{query}")

    last = (total - 1) // current.limit * current.limit if total else 0
    links = {"self": href(current.offset), "first": href(0), "last": href(last)}
    if current.offset > 0:
        links["prev"] = href(max(0, current.offset - current.limit))
    if current.offset + current.limit < total:
        links["next"] = href(current.offset + current.limit)
    return links
