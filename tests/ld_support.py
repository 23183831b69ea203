"""Helpers of the LaunchDarkly tests: tokens, headers, bodies, and the documented facts
(tests/fixtures/launchdarkly/)."""

from __future__ import annotations

import json

from tests.support import FIXTURES

LD_TOKEN = "api-0b3c5e7f-test-access-token"
FACTS = json.loads((FIXTURES / "launchdarkly" / "errors.json").read_text())
HEADERS = {"Authorization": LD_TOKEN}
BETA = {"Authorization": LD_TOKEN, "LD-API-Version": "beta"}
LD_SETTINGS = {"access_tokens": [LD_TOKEN]}


def custom_metric(key: str, **extra) -> dict:
    return {"key": key, "kind": "custom", "isNumeric": False, "eventKey": f"{key}-event", **extra}


def group_body(key: str, metrics: list[str], kind: str = "funnel", **extra) -> dict:
    return {"key": key, "name": key.title(), "kind": kind, "maintainerId": "member-1", "tags": [],
            "metrics": [{"key": m, "nameInGroup": f"step {i}"} for i, m in enumerate(metrics)], **extra}


async def error_of(response, status: int, code: str) -> str:
    """Assert LaunchDarkly's error body {code, message, id} with `code`; returns the message."""
    body = await response.json()
    assert response.status == status, body
    assert set(body) == set(FACTS["error_fields"]), body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"] and body["id"], body
    return body["message"]
