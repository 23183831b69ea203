"""Feeding the recorded SDK traffic through the real ingest path, for the read-endpoint tests."""

from __future__ import annotations

import calendar
import json
import time

from tests.support import PAYLOADS, client_headers, hour_start, iso, recorded_requests


def recorded_hour() -> int:
    """The hour in which the recorded SDK metrics were sent, read from their bucket stops."""
    hours = {hour_start(calendar.timegm(time.strptime(r["body"]["bucket"]["stop"][:19], "%Y-%m-%dT%H:%M:%S")))
             for r in recorded_requests("metrics")}
    assert len(hours) == 1, f"the recording spans several hours: {sorted(hours)}"
    return hours.pop()


# The recorded traffic was sent between 18:19 and 18:21 UTC (bucket stops included). Tests that
# replay it and compare with Unleash's answers run the proxy's clock just after it, at 18:25 of the
# recording's day (`@pytest.mark.clock_at(RECORDED_AT)`), so windows line up with Unleash's answers.
# The date is the recording's: since the clock stands there, it never ages.
RECORDED_AT = recorded_hour() + 25 * 60
RECORDED_HOUR = iso(hour_start(RECORDED_AT), ".000")


def admin_response(name: str) -> dict:
    return json.loads((PAYLOADS / "admin-responses" / name).read_text())


async def post(client, path: str, body: dict, headers: dict | None = None) -> None:
    response = await client.post(path, json=body, headers={**client_headers(), **(headers or {})})
    assert response.status == 202, await response.text()


async def post_recorded_traffic(client) -> None:
    """Every register and metrics request the two SDKs sent, then the curl register, metrics and
    bulk bodies: the same traffic Unleash 7.5.1 answered the admin-responses fixtures from."""
    for kind in ("register", "metrics"):
        for record in recorded_requests(kind):
            sdk = {k: v for k, v in record["headers"].items() if k.lower().startswith("unleash-")}
            await post(client, record["path"], record["body"], sdk)
    for name, path in (("register", "/api/client/register"), ("metrics", "/api/client/metrics"),
                       ("bulk", "/api/client/metrics/bulk")):
        await post(client, path, json.loads((PAYLOADS / "curl" / f"{name}.json").read_text()))


def same_shape(ours, theirs, where: str = "$", unknown: frozenset[str] = frozenset()) -> None:
    """Field by field: the same keys at every level of nesting, and the same JSON types. Keys in
    `unknown` name what only Unleash knows (a flag's description...): the proxy answers null there."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{where}: expected an object, got {ours!r}"
        assert set(ours) == set(theirs), f"{where}: keys {sorted(ours)} != Unleash's {sorted(theirs)}"
        for key in theirs:
            if theirs[key] is not None and not (key in unknown and ours[key] is None):
                same_shape(ours[key], theirs[key], f"{where}.{key}", unknown)
    elif isinstance(theirs, list):
        assert isinstance(ours, list), f"{where}: expected a list, got {ours!r}"
        for i, (mine, unleash) in enumerate(zip(ours, theirs)):
            same_shape(mine, unleash, f"{where}[{i}]", unknown)
    else:
        assert isinstance(ours, type(theirs)), f"{where}: {ours!r} is not a {type(theirs).__name__}"
