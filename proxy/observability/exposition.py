"""Prometheus text format (0.0.4) written by hand for families built from store rows.

prometheus_client costs ~700 bytes per series and ~200 ms to render 10,000 of them
(docs/performance.md); the per-flag and custom-metric families are rendered straight from query rows
instead, one f-string per sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

LabelPairs = Iterable[tuple[str, str]]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # "3", as Unleash renders a posted 3
    return repr(value)


def label_text(labels: LabelPairs) -> str:
    inner = ",".join(f'{key}="{escape_label(value)}"' for key, value in labels)
    return "{" + inner + "}" if inner else ""


def header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}"]


def family(name: str, kind: str, help_text: str,
           samples: Iterable[tuple[LabelPairs, float]]) -> list[str]:
    """Lines of one family whose samples carry the family's own name."""
    lines = header(name, kind, help_text)
    lines.extend(f"{name}{label_text(labels)} {format_value(value)}" for labels, value in samples)
    return lines


def usage_family(rows: Iterable[tuple[str, str, int, int]]) -> list[str]:
    """feature_toggle_usage_total{appName, toggle, active}, named and labelled as Unleash does."""
    name = "feature_toggle_usage_total"
    lines = header(name, "counter", "Number of times a feature flag was evaluated, by app, flag and result")
    append = lines.append
    for app, flag, yes, no in rows:
        labels = f'appName="{escape_label(app)}",toggle="{escape_label(flag)}"'
        append(f'{name}{{{labels},active="true"}} {yes}')
        append(f'{name}{{{labels},active="false"}} {no}')
    return lines


def cumulative_buckets(bounds: Iterable[float], counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts (last slot = above every bound) as Prometheus' cumulative (le, count)."""
    cumulative, buckets = 0, []
    for bound, n in zip(bounds, counts):
        cumulative += n
        buckets.append((str(float(bound)), cumulative))
    buckets.append(("+Inf", cumulative + counts[-1]))
    return buckets


def text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode() if lines else b""
