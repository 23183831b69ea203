"""Reading an SDK event post or a metric import, apart from HTTP and SQL: validation with the index
of the bad event, and the summary counters turned into the usage store's counts.

Summary counters map onto the usage ledger's yes / no / variants (docs/launchdarkly.md):
- `unknown: true` (the flag was not found) adds to `no`;
- a boolean value adds to `yes` when true, to `no` when false;
- any other value adds to `yes` and to the variant named by its string form (a string as it is,
  a number as JSON), or `variation-<n>` for values without a short string form (objects, arrays,
  null, long strings).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from proxy.launchdarkly.schemas.events import (
    CustomEvent,
    DiagnosticEvent,
    Event,
    EventList,
    FlagSummary,
    ImportList,
)
from proxy.storage.journal import CountRow

APP_PREFIX = "launchdarkly:"
MAX_VARIANT_NAME = 100
_AT_INDEX = re.compile(r"^(?P<what>.*?) - at `\$\[(?P<index>\d+)\](?P<rest>[^`]*)`$")
_decode_events = msgspec.json.Decoder(EventList).decode
_decode_imports = msgspec.json.Decoder(ImportList).decode
_decode_diagnostic = msgspec.json.Decoder(DiagnosticEvent).decode
_encode = msgspec.json.Encoder().encode


class BadEvents(ValueError):
    """The body is not a valid post; the message says what, and which event."""


def app_name(environment: str) -> str:
    return APP_PREFIX + environment


def _explain(exc: msgspec.ValidationError, array: bool = True) -> str:
    text = str(exc)
    found = _AT_INDEX.match(text)
    if found:
        rest = found["rest"].lstrip(".")
        where = f" (at {rest})" if rest else ""
        return f"event {found['index']}: {found['what']}{where}"
    if array and text.startswith("Expected `array`"):
        return "the body must be a JSON array of events"
    return text


def _check_empty(body: bytes) -> None:
    if not body.strip():
        raise BadEvents("body may not be empty")


def parse_events(body: bytes) -> list[Event]:
    """The events of an analytics post; BadEvents names the bad event's index."""
    _check_empty(body)
    try:
        events = _decode_events(body)
    except msgspec.ValidationError as exc:
        raise BadEvents(_explain(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadEvents(f"the body is not JSON: {exc}") from None
    for index, event in enumerate(events):
        try:
            if event.kind == "summary":
                event.features = msgspec.convert(event.features or {}, dict[str, FlagSummary])
            elif event.kind == "custom":
                msgspec.convert({"kind": event.kind, "key": event.key, "creationDate": event.creationDate,
                                 "metricValue": event.metricValue}, CustomEvent)
        except msgspec.ValidationError as exc:
            raise BadEvents(f"event {index}: {exc}") from None
    return events


def parse_imports(body: bytes) -> int:
    """Validate a metric import (only `custom` events); returns how many events it holds."""
    _check_empty(body)
    try:
        return len(_decode_imports(body))
    except msgspec.ValidationError as exc:
        raise BadEvents(_explain(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadEvents(f"the body is not JSON: {exc}") from None


def parse_diagnostic(body: bytes) -> None:
    _check_empty(body)
    try:
        _decode_diagnostic(body)
    except msgspec.ValidationError as exc:
        raise BadEvents(f"the diagnostic event {exc}" if "`kind`" in str(exc) else
                        "a diagnostic body must be a JSON object with a `kind`") from None
    except msgspec.DecodeError as exc:
        raise BadEvents(f"the body is not JSON: {exc}") from None


def _variant(value: object, variation: int | None) -> str:
    if isinstance(value, str) and value and len(value) <= MAX_VARIANT_NAME:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _encode(value).decode()
    return f"variation-{variation}" if variation is not None else "variation-none"


def summary_counts(events: Iterable[Event], environment: str, received: float) -> list[CountRow]:
    """The usage counts of every summary event of a post, under app `launchdarkly:<environment>`,
    in the UTC hour of the summary's end (as Unleash files a bucket by its stop)."""
    app = app_name(environment)
    merged: dict[tuple[str, int], CountRow] = {}
    for event in events:
        if event.kind != "summary" or not event.features:
            continue
        end = event.endDate if isinstance(event.endDate, int) and event.endDate > 0 else received * 1000
        hour = int(end // 1000 // 3600 * 3600)
        for flag, summary in event.features.items():
            row = merged.get((flag, hour))
            if row is None:
                row = merged[(flag, hour)] = CountRow(app, flag, hour, 0, 0, None)
            for counter in summary.counters:
                if counter.unknown or counter.count == 0:
                    row.no += counter.count
                elif isinstance(counter.value, bool):
                    if counter.value:
                        row.yes += counter.count
                    else:
                        row.no += counter.count
                else:
                    row.yes += counter.count
                    variants = row.variants if row.variants is not None else {}
                    name = _variant(counter.value, counter.variation)
                    variants[name] = variants.get(name, 0) + counter.count
                    row.variants = variants
    return [row for row in merged.values() if row.yes or row.no]
