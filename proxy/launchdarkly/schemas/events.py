"""The wire shapes of LaunchDarkly's SDK events and metric imports (what the proxy validates before
its 202; everything else an event holds is kept and forwarded unchanged).

An analytics post is a JSON array of events, each an object with a string `kind`. The proxy reads
only what it counts: `summary` events (flag evaluation counters) and `custom` events (metric
events). Unknown kinds pass as they are. A diagnostic post is one JSON object with a `kind`.
A metric import is a JSON array of `custom` events only (LaunchDarkly's import API).
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, Raw, Struct, UnsetType

MAX_KEY_LENGTH = 1024
EventKey = Annotated[str, Meta(min_length=1, max_length=MAX_KEY_LENGTH)]
Count = Annotated[int, Meta(ge=0, le=4_294_967_295)]


class Counter(Struct, kw_only=True, forbid_unknown_fields=False, gc=False):
    """One counter of a summary: `count` evaluations that gave `value` (variation `variation` of
    flag version `version`); `unknown` when the flag was not found."""

    count: Count
    value: Any = None
    variation: int | None = None
    version: int | None = None
    unknown: bool = False


class FlagSummary(Struct, kw_only=True, forbid_unknown_fields=False, gc=False):
    default: Any = None
    counters: list[Counter] = []
    contextKinds: list[str] | UnsetType = UNSET


class Event(Struct, kw_only=True, forbid_unknown_fields=False, gc=False):
    """One analytics event, as far as the proxy reads it: `kind` (required; any string), and for
    `summary` events the `features` and their counters, for `custom` events the `key` and
    `metricValue`. The fields other kinds give other meanings are not read (typed Any).

    `features` is typed here, for every kind: only summary events carry it, and one decode then
    validates their counters (a second pass over the summaries cost a third of the handler)."""

    kind: str
    key: Any = None
    creationDate: Any = None
    metricValue: Any = None
    endDate: Any = None
    features: dict[str, FlagSummary] | None = None


class ImportEvent(Struct, kw_only=True, forbid_unknown_fields=False, gc=False):
    """One event of a metric import (`POST /v2/event-data-import/{projectKey}/{environmentKey}`)."""

    kind: Annotated[str, Meta(pattern="^custom$", description="always `custom`")]
    key: EventKey
    creationDate: Annotated[int, Meta(ge=0, description="Unix milliseconds")]
    metricValue: float | UnsetType = UNSET
    contextKeys: dict[str, str] | UnsetType = UNSET


class DiagnosticEvent(Struct, kw_only=True, forbid_unknown_fields=False, gc=False):
    """A diagnostic post: one object, forwarded whole and never merged."""

    kind: str


EventList = list[Event]
ImportList = list[ImportEvent]
RawEvents = list[Raw]


class RelayError(Struct, kw_only=True):
    """Relay's error body on the event routes: `{"message": ...}`."""

    message: str


class MetricEventHour(Struct, kw_only=True):
    hour: int  # Unix milliseconds of the start of the UTC hour
    environment: str
    count: int
    sum: float | None = None  # numeric metrics: the sum of metricValue


class MetricEventCounts(Struct, kw_only=True):
    """The proxy's own answer: a metric's custom events counted per hour (newest first)."""

    projectKey: str
    metricKey: str
    eventKey: str | None
    isNumeric: bool
    hoursBack: int
    totalCount: int
    totalSum: float | None
    items: list[MetricEventHour]
