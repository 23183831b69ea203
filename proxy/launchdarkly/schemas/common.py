"""Shapes shared by the metrics and metric-groups resources: links, errors, JSON Patch."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

# A resource key as it appears in a path (LaunchDarkly keys: letters, digits, '.', '_', '-').
KEY_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_KEY_LENGTH = 255
Key = Annotated[str, Meta(min_length=1, max_length=MAX_KEY_LENGTH, pattern=KEY_PATTERN)]
Text = Annotated[str, Meta(max_length=4096)]
Name = Annotated[str, Meta(min_length=1, max_length=MAX_KEY_LENGTH)]
Tag = Annotated[str, Meta(min_length=1, max_length=MAX_KEY_LENGTH)]
Tags = Annotated[list[Tag], Meta(max_length=100)]


class Link(Struct, kw_only=True):
    """A link to a related resource: an API-root-relative href and its content type."""

    href: str
    type: str = "application/json"


class LdError(Struct, kw_only=True):
    """LaunchDarkly's error body: a machine code, a message, and an id to quote."""

    code: str
    message: str
    id: str


class PatchOperation(Struct, kw_only=True, forbid_unknown_fields=False):
    """One RFC 6902 operation; `from` is used by move and copy, `value` by add, replace and test."""

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: Annotated[str, Meta(max_length=1024)]
    value: Any | UnsetType = UNSET
    from_: Annotated[str, Meta(max_length=1024)] | UnsetType = field(default=UNSET, name="from")


JsonPatch = Annotated[list[PatchOperation], Meta(min_length=1, max_length=100)]


def links(self_href: str, parent_href: str) -> dict[str, Link]:
    return {"parent": Link(href=parent_href), "self": Link(href=self_href)}


class DeadLetter(Struct, kw_only=True):
    """A queued write LaunchDarkly refused on replay, with its answer."""

    id: int
    project: str
    method: str
    path: str
    body: Any  # the JSON body as it was sent, or null
    status: int | None
    error: str  # LaunchDarkly's answer (status and the start of its body)
    at: float  # when it was refused, epoch seconds


class DeadLetterList(Struct, kw_only=True):
    """The newest dead letters of the LaunchDarkly write queue, and how many there are."""

    totalCount: int
    items: list[DeadLetter]
