"""The harness itself: usage posted straight to the real Unleash comes back from its raw endpoint.

Also documents how long Unleash takes to make counts visible (it writes buffered usage to
PostgreSQL every 5 s): the measured delay is printed and recorded as a test property.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import KNOWN_FLAGS
from tests.integration.unleash_server import CLIENT_TOKEN, Usage
from tests.integration.usage_model import (
    expected_usage,
    iso_now,
    restamped,
    wait_for_usage,
)
from tests.support import PAYLOADS

pytestmark = pytest.mark.integration

VISIBLE_WITHIN = 30.0  # seconds; Unleash's 5 s write cycle plus a loaded CI machine


def own_bulk_body() -> dict:
    now = iso_now()
    row = dict(appName="direct-app", environment="development", timestamp=now)
    return {
        "applications": [],
        "metrics": [
            {**row, "featureName": "it.checkout", "yes": 7, "no": 3},
            {**row, "featureName": "it.colour", "yes": 5, "no": 0, "variants": {"green": 3, "blue": 2}},
            # Another environment than the token's: Unleash drops it silently.
            {**row, "featureName": "it.checkout", "environment": "production", "yes": 50, "no": 50},
            # A flag Unleash does not know: dropped too.
            {**row, "featureName": "it.never-created", "yes": 9, "no": 9},
        ],
    }


def test_bulk_posted_to_unleash_is_read_back_from_raw_usage(unleash, record_property):
    server = unleash.server
    recorded = restamped(json.loads((PAYLOADS / "curl" / "bulk.json").read_text()), app_prefix="direct:")
    bodies = [recorded, own_bulk_body()]
    expected = expected_usage(bodies, KNOWN_FLAGS, "development")
    # The model agrees with the literal counts of the own payload.
    assert expected[("it.checkout", "direct-app")] == Usage(yes=7, no=3)
    assert expected[("it.colour", "direct-app")] == Usage(yes=5, no=0, variants={"green": 3, "blue": 2})
    assert ("it.never-created", "direct-app") not in expected

    for body in bodies:
        status, _ = server.request("POST", "/api/client/metrics/bulk", body, token=CLIENT_TOKEN)
        assert status == 202

    visible_after = wait_for_usage(expected, server.usage, VISIBLE_WITHIN)
    record_property("unleash_visible_after_s", round(visible_after, 2))
    print(f"Unleash made posted counts visible after {visible_after:.1f} s")

    # Exactly what was posted: the production rows (99/99 in the recording, 50/50 in the own
    # body) were not added. Other tests post under other app names, hence the filter.
    assert direct_apps(server.usage("it.checkout")) == {"direct-app": Usage(yes=7, no=3)}
    assert direct_apps(server.usage("harness.flag-b")) == {"direct:bulk-app": Usage(yes=10, no=2)}


def direct_apps(usage: dict[str, Usage]) -> dict[str, Usage]:
    return {app: total for app, total in usage.items() if app.startswith("direct")}


def test_unleash_rejects_a_bulk_post_without_a_token(unleash):
    status, _ = unleash.server.request("POST", "/api/client/metrics/bulk", own_bulk_body(), token="")
    assert status == 401
