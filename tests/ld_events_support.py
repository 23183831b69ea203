"""What the SDK event tests share: credentials, settings, event bodies, a config file."""

from __future__ import annotations

import msgspec

from proxy.config import LaunchDarklySettings
from tests.ld_support import LD_TOKEN

SDK_KEY = "sdk-0b3c5e7f-1111-4222-8333-944455556666"
MOBILE_KEY = "mob-0b3c5e7f-1111-4222-8333-944455556666"
CLIENT_SIDE_ID = "5f0b3c5e7f11114222833394"
STAGING_SDK_KEY = "sdk-77777777-1111-4222-8333-944455556666"
PROJECT = "proj"
ENVIRONMENTS = {
    "production": {"sdk_key": SDK_KEY, "mobile_key": MOBILE_KEY, "client_side_id": CLIENT_SIDE_ID, "project": PROJECT},
    "staging": {"sdk_key": STAGING_SDK_KEY, "project": PROJECT},
}


def ld_settings(events_url: str | None = None, **extra) -> LaunchDarklySettings:
    values = {"access_tokens": [LD_TOKEN], "environments": ENVIRONMENTS, "retry_initial": 0.01,
              "retry_max": 0.05, **extra}
    if events_url is not None:
        values["events_url"] = events_url
    return msgspec.convert(values, LaunchDarklySettings)


def sdk_headers(key: str = SDK_KEY, payload_id: str | None = None, **extra) -> dict[str, str]:
    headers = {"Authorization": key, "Content-Type": "application/json", "X-LaunchDarkly-Event-Schema": "4",
               "User-Agent": "PythonClient/9.20.0", **extra}
    if payload_id is not None:
        headers["X-LaunchDarkly-Payload-ID"] = payload_id
    return headers


def summary(flags: dict[str, list[dict]], end_ms: int) -> dict:
    return {"kind": "summary", "startDate": end_ms - 5000, "endDate": end_ms,
            "features": {flag: {"default": None, "counters": counters} for flag, counters in flags.items()}}


def custom(key: str, when_ms: int, value: float | None = None, user: str = "u1") -> dict:
    event = {"kind": "custom", "key": key, "creationDate": when_ms, "contextKeys": {"user": user}}
    if value is not None:
        event["metricValue"] = value
    return event


def index(when_ms: int, user: str = "u1") -> dict:
    return {"kind": "index", "creationDate": when_ms, "context": {"kind": "user", "key": user}}


def config_file(path, events_url: str | None, **extra) -> str:
    """A TOML config of the LaunchDarkly events settings for a `python -m proxy` subprocess."""
    lines = ["[launchdarkly]", f'access_tokens = ["{LD_TOKEN}"]', "retry_initial = 0.05", "retry_max = 0.2"]
    if events_url is not None:
        lines.append(f'events_url = "{events_url}"')
    for name, value in extra.items():
        lines.append(f"{name} = {value!r}" if not isinstance(value, str) else f'{name} = "{value}"')
    for name, env in ENVIRONMENTS.items():
        lines.append(f"[launchdarkly.environments.{name}]")
        lines += [f'{k} = "{v}"' for k, v in env.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)
