"""What Unleash should count for the bodies a test posts, and helpers to post recorded bodies now.

The recorded payloads carry the hour they were recorded in; Unleash files usage under the hour of
`bucket.stop` (bulk: `timestamp`) and its raw endpoint only looks back a few hours, so every body
is re-stamped to the current time before it is posted.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from tests.integration.unleash_server import Usage

UsageKey = tuple[str, str]  # flag, app


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def restamped(body: dict, app_prefix: str = "") -> dict:
    """A copy of a metrics or bulk body stamped with the current time, apps renamed with a
    prefix so two tests posting the same recording count under different apps."""
    body = copy.deepcopy(body)
    now = iso_now()
    if "bucket" in body:
        body["bucket"]["start"] = body["bucket"]["stop"] = now
    for row in body.get("metrics", []):
        row["timestamp"] = now
    for item in [body, *body.get("applications", []), *body.get("metrics", [])]:
        if "appName" in item:
            item["appName"] = app_prefix + item["appName"]
    return body


def expected_usage(bodies: Iterable[dict], known_flags: Iterable[str], environment: str) -> dict[UsageKey, Usage]:
    """Unleash's counting rules: usage of flags it does not know is dropped, a bulk body only
    counts rows of the token's environment, rows with yes == no == 0 are skipped."""
    known = set(known_flags)
    rows: list[tuple[str, str, dict]] = []
    for body in bodies:
        if "bucket" in body:
            rows += [(flag, body["appName"], counts) for flag, counts in body["bucket"]["toggles"].items()]
        for row in body.get("metrics", []):
            if row["environment"] == environment:
                rows.append((row["featureName"], row["appName"], row))
    expected: dict[UsageKey, Usage] = {}
    for flag, app, counts in rows:
        if flag not in known or not (counts.get("yes") or counts.get("no")):
            continue
        total = expected.setdefault((flag, app), Usage())
        total.yes += counts.get("yes", 0)
        total.no += counts.get("no", 0)
        for variant, count in (counts.get("variants") or {}).items():
            total.variants[variant] = total.variants.get(variant, 0) + count
    return expected


def observed_usage(read: Callable[[str], dict[str, Usage]], keys: Iterable[UsageKey]) -> dict[UsageKey, Usage]:
    """Unleash's totals for every (flag, app) in keys; Usage() where it has none yet."""
    by_flag: dict[str, dict[str, Usage]] = {}
    observed = {}
    for flag, app in keys:
        if flag not in by_flag:
            by_flag[flag] = read(flag)
        observed[(flag, app)] = by_flag[flag].get(app, Usage())
    return observed


def exceeds(observed: Usage, expected: Usage) -> bool:
    return (observed.yes > expected.yes or observed.no > expected.no
            or any(count > expected.variants.get(name, 0) for name, count in observed.variants.items()))


def wait_for_usage(expected: dict[UsageKey, Usage], read: Callable[[str], dict[str, Usage]], timeout: float) -> float:
    """Seconds until Unleash's totals equal `expected`. Fails at once when any total goes past
    what was posted (a double send), and after `timeout` with the difference."""
    observed: dict[UsageKey, Usage] = {}

    def arrived() -> bool:
        nonlocal observed
        observed = observed_usage(read, expected)
        over = {key: (observed[key], expected[key]) for key in expected if exceeds(observed[key], expected[key])}
        assert not over, f"Unleash counted more than was posted (observed, expected): {over}"
        return observed == expected

    try:
        return poll_until(arrived, timeout)
    except AssertionError as exc:
        missing = {key: (observed.get(key), total) for key, total in expected.items() if observed.get(key) != total}
        raise AssertionError(f"{exc}; still differing (observed, expected): {missing}") from None


def poll_until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    """Seconds until check() held; raises AssertionError after timeout. Unleash is a real server
    with its own timers, so tests poll with a deadline instead of sleeping a fixed time."""
    began = time.monotonic()
    while True:
        if check():
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
