"""Helpers for tests that post usage and read Prometheus text back."""

from __future__ import annotations

import re

from tests.support import hour_start, iso, this_hour


def metrics_body(app: str, toggles: dict[str, tuple[int, int]], at: float | None = None) -> dict:
    """A /api/client/metrics body with (yes, no) per toggle, its bucket the first minute of the
    hour of `at` (the proxy's clock), or of the current hour."""
    hour = this_hour() if at is None else hour_start(at)
    return {
        "appName": app,
        "instanceId": "i-1",
        "bucket": {
            "start": iso(hour),
            "stop": iso(hour + 60),
            "toggles": {name: {"yes": yes, "no": no} for name, (yes, no) in toggles.items()},
        },
    }


def samples(text: str, name: str) -> dict[str, float]:
    """{label text: value} of every sample named exactly `name` ("" for no labels)."""
    found = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(\{{.*\}})? (\S+)", line)
        if m:
            found[m.group(1) or ""] = float(m.group(2))
    return found
