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

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator

import msgspec

from proxy.launchdarkly.schemas.events import MAX_KEY_LENGTH, DiagnosticEvent, Event, EventList, ImportList
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


def _diagnostic_problem(exc: msgspec.ValidationError) -> str:
    return f"the diagnostic event {exc}" if "`kind`" in str(exc) else "a diagnostic body must be a JSON object with a `kind`"


@contextlib.contextmanager
def _decoding(explain: Callable[[msgspec.ValidationError], str] = _explain) -> Iterator[None]:
    """Decoding errors as BadEvents. RecursionError: JSON nested about as deep as the decoder allows
    (the shared body reader only reads the bytes; these decoders are the first to parse them)."""
    try:
        yield
    except msgspec.ValidationError as exc:
        raise BadEvents(explain(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadEvents(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise BadEvents("the body is nested too deeply") from None


def _check_empty(body: bytes) -> None:
    if not body.strip():
        raise BadEvents("body may not be empty")


def parse_events(body: bytes) -> list[Event]:
    """The events of an analytics post; BadEvents names the bad event's index."""
    _check_empty(body)
    with _decoding():
        events = _decode_events(body)
    for index, event in enumerate(events):
        if event.kind == "custom":
            problem = _custom_problem(event)
            if problem:
                raise BadEvents(f"event {index}: {problem}")
    return events


def _custom_problem(event: Event) -> str | None:
    """What is wrong with a custom event (`key` a string, `creationDate` an integer, `metricValue` a
    number), checked by hand rather than by a second decode: this is the hot path."""
    key = event.key
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        return f"a custom event needs a `key` of 1 to {MAX_KEY_LENGTH} characters"
    if event.creationDate is not None and (type(event.creationDate) is not int):
        return "`creationDate` must be an integer (Unix milliseconds)"
    value = event.metricValue
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        return "`metricValue` must be a number"
    return None


def parse_imports(body: bytes) -> int:
    """Validate a metric import (only `custom` events); returns how many events it holds."""
    _check_empty(body)
    with _decoding():
        return len(_decode_imports(body))


def parse_diagnostic(body: bytes) -> None:
    _check_empty(body)
    with _decoding(_diagnostic_problem):
        _decode_diagnostic(body)


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
        features = event.features
        if event.kind != "summary" or not features:
            continue
        end = event.endDate if type(event.endDate) is int and event.endDate > 0 else received * 1000
        hour = int(end // 3_600_000 * 3600)
        for flag, summary in features.items():
            yes = no = 0
            variants: dict[str, int] | None = None
            for counter in summary.counters:
                value, count = counter.value, counter.count
                if counter.unknown or value is False:
                    no += count
                elif value is True:
                    yes += count
                else:
                    yes += count
                    if variants is None:
                        variants = {}
                    name = _variant(value, counter.variation)
                    variants[name] = variants.get(name, 0) + count
            if not (yes or no):
                continue
            row = merged.get((flag, hour))
            if row is None:
                merged[(flag, hour)] = CountRow(app, flag, hour, yes, no, variants)
                continue
            row.yes += yes
            row.no += no
            if variants:
                known = row.variants if row.variants is not None else {}
                for name, count in variants.items():
                    known[name] = known.get(name, 0) + count
                row.variants = known
    return list(merged.values())
