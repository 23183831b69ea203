"""The tests' model of Unleash's counting, checked against what a real Unleash (8.2.0) answered.

The recording in tests/fixtures/payloads posted the SDK metrics and the curl bodies to Unleash
and saved its raw usage per flag (admin-responses/raw-*.json). The model must predict exactly
those totals, or the end-to-end tests would compare against a wrong expectation. No server needed.
"""

from __future__ import annotations

import json

from tests.integration.conftest import RECORDED_FLAGS
from tests.integration.unleash_server import Usage
from tests.integration.usage_model import exceeds, expected_usage, restamped
from tests.support import PAYLOADS, recorded_requests


def recorded_posts() -> list[dict]:
    curl = [json.loads((PAYLOADS / "curl" / name).read_text()) for name in ("metrics.json", "bulk.json")]
    return [r["body"] for r in recorded_requests("metrics")] + curl


def recorded_unleash_totals() -> dict[tuple[str, str], Usage]:
    totals = {}
    for path in sorted((PAYLOADS / "admin-responses").glob("raw-*.json")):
        for row in json.loads(path.read_text())["data"]:
            totals[(row["featureName"], row["appName"])] = Usage(row["yes"], row["no"], row.get("variants") or {})
    return totals


def test_model_predicts_the_totals_real_unleash_returned_for_the_recorded_posts():
    recorded = recorded_unleash_totals()
    assert len(recorded) == 10
    assert expected_usage(recorded_posts(), RECORDED_FLAGS, "development") == recorded


def test_model_drops_unknown_flags_and_other_environments():
    expected = expected_usage(recorded_posts(), RECORDED_FLAGS, "development")
    assert not any(flag in ("harness.does-not-exist", "harness.unknown-flag") for flag, _ in expected)
    # bulk.json's production row (99/99) is not in the development totals.
    assert expected[("harness.flag-b", "bulk-app")] == Usage(yes=10, no=2)


def test_restamped_moves_every_timestamp_to_now_and_renames_apps():
    bulk = json.loads((PAYLOADS / "curl" / "bulk.json").read_text())
    fresh = restamped(bulk, app_prefix="x:")
    assert {row["timestamp"] for row in fresh["metrics"]} != {row["timestamp"] for row in bulk["metrics"]}
    assert len({row["timestamp"] for row in fresh["metrics"]}) == 1
    assert {row["appName"] for row in fresh["metrics"]} == {"x:bulk-app"}
    assert fresh["applications"][0]["appName"] == "x:bulk-app"
    assert bulk["metrics"][0]["appName"] == "bulk-app"  # the recording itself is untouched


def test_exceeds_flags_any_count_above_the_expected_one():
    expected = Usage(yes=5, no=2, variants={"red": 3})
    assert not exceeds(Usage(yes=5, no=2, variants={"red": 3}), expected)
    assert not exceeds(Usage(yes=1), expected)
    assert exceeds(Usage(yes=6, no=2), expected)
    assert exceeds(Usage(yes=5, no=3), expected)
    assert exceeds(Usage(yes=5, no=2, variants={"red": 4}), expected)
