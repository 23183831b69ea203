"""Helpers for tests that post usage and read Prometheus text back."""

from __future__ import annotations

import re


def metrics_body(app: str, toggles: dict[str, tuple[int, int]]) -> dict:
    """A /api/client/metrics body with (yes, no) per toggle, in the 18:00 hour of 2026-11-22."""
    return {
        "appName": app,
        "instanceId": "i-1",
        "bucket": {
            "start": "2026-11-22T18:00:00Z",
            "stop": "2026-11-22T18:01:00Z",
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
