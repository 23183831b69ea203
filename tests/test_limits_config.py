"""The options of the disk bound, overflow policy and idempotency window: defaults, sources, errors."""

from __future__ import annotations

from pathlib import Path

from proxy.cli import main
from proxy.config import Settings, load_settings
from proxy.storage.capacity.limits import PageBudget

CONFIG = Path(__file__).parent.parent / "config" / "metrics-proxy.toml"


def test_the_documented_file_states_the_defaults():
    from_file = load_settings(str(CONFIG), environ={})
    default = Settings()
    assert (from_file.max_db_size, from_file.overflow_policy, from_file.idempotency_window) == (
        default.max_db_size, default.overflow_policy, default.idempotency_window,
    ) == (1024**3, "refuse", 86400.0)


def test_environment_overrides_the_file():
    settings = load_settings(str(CONFIG), environ={
        "METRICS_PROXY_MAX_DB_SIZE": "300000",
        "METRICS_PROXY_OVERFLOW_POLICY": "drop_oldest",
        "METRICS_PROXY_IDEMPOTENCY_WINDOW": "90",
    })
    assert (settings.max_db_size, settings.overflow_policy, settings.idempotency_window) == (300000, "drop_oldest", 90.0)


def test_a_bad_option_stops_the_start_with_one_line_naming_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("METRICS_PROXY_OVERFLOW_POLICY", "drop_newest")
    assert main(["serve", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "metrics-proxy: configuration error: invalid option overflow_policy: Invalid enum value 'drop_newest'"
    )


def test_the_limit_is_shared_by_the_wal_the_reserve_and_what_ingest_may_fill():
    default = PageBudget.for_size(1024**3, 4096)
    # -wal: an eighth, at most 64 MiB; reserve: a tenth of the rest; ingest stops above that.
    assert (default.wal_pages, default.hard_pages, default.high_water_pages) == (16384, 245760, 221184)
    tiny = PageBudget.for_size(256 * 1024, 4096)  # never under 8 pages of log, 16 of reserve
    assert (tiny.wal_pages, tiny.hard_pages, tiny.high_water_pages) == (8, 56, 40)
    assert tiny.fold_after_bytes == 16 * 4096 // 2
    assert tiny.allowance(used_pages=56, ingest_processes=2) == 16 * 4096 // 20 // 2  # full: the reserve's share
    assert tiny.allowance(used_pages=0, ingest_processes=2) == 40 * 4096 // 20 // 2  # empty: the room below the mark
