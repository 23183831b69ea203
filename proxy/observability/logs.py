"""The process's log lines: human-readable text (the default) or one JSON object per line, and
every secret the configuration holds redacted from both.

JSON lines come from python-json-logger and always carry the same keys, in this order: `time`
(UTC, RFC 3339 with milliseconds), `level`, `logger`, `process` ("primary" or "worker N"),
`message`, and `exception` (the traceback as text, or null).

Redaction is a filter on the one handler, so it sees every record of every logger (aiohttp's and
asyncio's included) after its message and any traceback are rendered: the configured tokens, the
secret part of each, the values of upstream headers and of any option whose name says it holds a
token, key, secret or password (so a vendor table added later is covered by its names), the
password of a URL, and anything shaped like an Unleash token or a LaunchDarkly SDK or mobile key.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from pythonjsonlogger.json import JsonFormatter

from proxy.config import Settings

REDACTED = "[REDACTED]"
JSON_KEYS = ("time", "level", "logger", "process", "message", "exception")
_SECRET_WORDS = {"token", "tokens", "secret", "secrets", "key", "keys", "password", "headers"}
# Shapes of secrets whether configured or not: the secret part of an Unleash token
# (`project:environment.secret`), LaunchDarkly SDK and mobile keys, and a URL's password.
_SHAPES = [
    (re.compile(r"(?<![\w/])([A-Za-z*][\w*-]*:[\w*-]+\.)[\w-]{8,}"), r"\1" + REDACTED),
    (re.compile(r"\b(sdk|mob)-[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}\b"), r"\1-" + REDACTED),
    (re.compile(r"(\w+://[^/\s:@]+:)[^/\s@]+@"), r"\1" + REDACTED + "@"),
]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def secrets_of(settings: Any) -> set[str]:
    """Every secret value in `settings` (a Settings or one of its tables), looked for by option
    name, in nested tables too."""
    found: set[str] = set()
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        if isinstance(value, msgspec.Struct):
            found |= secrets_of(value)
        elif isinstance(value, dict) and any(isinstance(item, msgspec.Struct) for item in value.values()):
            for item in value.values():  # tables by name, e.g. [launchdarkly.environments.NAME]
                found |= secrets_of(item)
        elif _SECRET_WORDS & set(name.split("_")):
            for text in _strings(value):
                found.add(text)
                # a token's secret part alone (`project:environment.secret`)
                _, dot, secret = text.partition(".")
                if dot and ":" in text.split(".")[0] and len(secret) >= 6:
                    found.add(secret)
    url = getattr(getattr(settings, "upstream", None), "url", None) or ""
    password = re.match(r"\w+://[^/\s:@]+:([^/\s@]+)@", url)
    if password:
        found.add(password.group(1))
    return {s for s in found if len(s) >= 4}


class Redactor(logging.Filter):
    """Rewrites each record's message and traceback with every secret replaced by REDACTED."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        ordered = sorted(set(secrets), key=len, reverse=True)
        self._secrets = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None
        self._plain = logging.Formatter()

    def redact(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = self.redact(message), None
        if record.exc_info:
            record.exc_text = self.redact(self._plain.formatException(record.exc_info))
            record.exc_info = None  # both formatters print exc_text instead
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class StableJsonFormatter(JsonFormatter):
    """One JSON object per record with exactly JSON_KEYS, whatever `extra` a caller passed."""

    def __init__(self, process: str) -> None:
        super().__init__(["asctime", "levelname", "name", "message"], static_fields={"process": process},
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                                        "exc_info": "exception"})

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: log_data.get(key) for key in JSON_KEYS}


def configure_logging(settings: Settings, process: str = "") -> None:
    """Log to stderr at settings.log_level in settings.log_format, secrets redacted. `process`
    names an ingest worker ("worker 1"); the primary's lines carry none in text."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(StableJsonFormatter(process or "primary"))
    else:
        # With ingest workers all processes share one stream: their lines name the process.
        tag = f"[{process}] " if process else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s"))
    handler.addFilter(Redactor(secrets_of(settings)))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
