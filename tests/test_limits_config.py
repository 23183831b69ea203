"""The options of the disk bound, overflow policy and idempotency window: defaults, sources, errors."""

from __future__ import annotations

from pathlib import Path

from proxy.cli import main
from proxy.config import Settings, load_settings
from proxy.store.limits import PageBudget

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


def test_the_reserve_is_a_tenth_of_the_limit_but_never_under_sixteen_pages():
    default = PageBudget.for_size(1024**3, 4096)
    assert default.hard_pages == 262144
    assert default.hard_pages - default.high_water_pages == 26214
    tiny = PageBudget.for_size(256 * 1024, 4096)
    assert (tiny.hard_pages, tiny.high_water_pages) == (64, 48)
    assert tiny.fold_after_bytes == 16 * 4096 // 16
