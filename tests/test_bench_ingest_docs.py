"""bench.ingest rewrites the results table of docs/performance.md from a run: only between its
markers, and from a quick run only when asked (quick figures must not replace full ones)."""

from __future__ import annotations

import time

import pytest

from bench import ingest


def a_run(quick: bool) -> dict:
    def measured(rps: float) -> dict:
        return {"rps": rps, "requests": int(rps * 5), "p50_ms": 2.0, "p99_ms": 9.0, "non_2xx": 0, "socket_errors": ""}

    results = {"seconds_per_run": 5 if quick else 15, "quick": quick, "event_loop": "uvloop", "cpus": 2,
               "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() - 480)),
               "finished": time.strftime("%Y-%m-%d %H:%M"), "note": "other work on the box"}
    for toggles, scale in ((20, 1.0), (200, 0.5)):
        results[f"{toggles}_toggles"] = {
            "bare": measured(30_000 * scale), "ceiling": measured(24_000 * scale), "ceiling_2": measured(27_000 * scale),
            "proxy": measured(12_000 * scale), "workers_2": measured(18_000 * scale),
            "proxy_at_half_load": measured(6_000 * scale), "workers_2_at_half_load": measured(9_000 * scale),
            "ratio_vs_bare": 0.4, "ratio_vs_ceiling": 0.5, "workers_2_ratio_vs_bare": 0.6,
            "workers_2_ratio_vs_ceiling": round(18_000 / 27_000, 3), "workers_2_ratio_vs_ceiling_2": 0.667,
        }
    return results


def test_the_table_replaces_only_what_stands_between_the_markers(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Before\n\n{ingest.BEGIN}\nold figures\n{ingest.END}\n\n## After\n")

    ingest.update_docs(a_run(quick=False), doc)

    text = doc.read_text()
    assert text.startswith(f"# Before\n\n{ingest.BEGIN}\n") and text.endswith(f"\n{ingest.END}\n\n## After\n")
    assert "old figures" not in text
    assert "full run, 15 s per measurement" in text and "other work on the box" in text
    assert "| 20 toggles | **proxy, workers = 2** | **18,000** |" in text
    assert "workers = 2 at 0.67 of the ceiling (its higher figure, 2 processes) (goal >= 0.90: NOT met)" in text

    ingest.update_docs(a_run(quick=False), doc)  # a second run replaces the first, markers stay single
    assert doc.read_text().count(ingest.BEGIN) == 1 and doc.read_text() == text


def test_a_file_without_markers_is_left_alone(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("no markers\n")
    with pytest.raises(ValueError):
        ingest.update_docs(a_run(quick=False), doc)
    assert doc.read_text() == "no markers\n"


@pytest.mark.parametrize(("quick", "asked", "written"), [
    (False, None, True), (True, None, False), (True, True, True), (False, False, False)])
def test_quick_runs_write_the_docs_only_when_asked(quick, asked, written):
    assert ingest.docs_wanted(quick, asked) is written
