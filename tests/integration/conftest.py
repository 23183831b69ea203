"""One real Unleash (8.2.0) + PostgreSQL for the whole session (about 6-30 s to start once the npm
cache is warm; the first run installs unleash-server, about a minute)."""

from __future__ import annotations

import contextlib

import pytest

from tests.integration.unleash_server import ToolMissing, UnleashStack, unleash_stack

# Flags used by the recorded payloads. Their `harness.does-not-exist` / `harness.unknown-flag`
# are left out on purpose: Unleash must drop that usage, and the tests expect it to.
RECORDED_FLAGS = ("harness.flag-a", "harness.flag-b", "harness.variant-flag")
# Flags of the tests' own payloads with known counts.
OWN_FLAGS = ("it.checkout", "it.colour")
# All created before the first metric is posted: Unleash caches the list of flag names for 10 s
# and drops usage of names it does not know.
KNOWN_FLAGS = RECORDED_FLAGS + OWN_FLAGS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: runs against a real Unleash server (skips without Node/PostgreSQL)")


@pytest.fixture(scope="session")
def unleash() -> UnleashStack:
    with contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(unleash_stack(flags=KNOWN_FLAGS))
        except ToolMissing as exc:
            pytest.skip(f"real Unleash unavailable: {exc}")
        yield started
