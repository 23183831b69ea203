"""One POST to the upstream bulk endpoint, classified. No retry policy here, no inbound HTTP."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

import aiohttp

from proxy import __version__
from proxy.clock import Clock
from proxy.config import UpstreamSettings

BULK_PATH = "/client/metrics/bulk"


@dataclass(slots=True)
class SendResult:
    status: int | None  # None: no HTTP answer
    error: str = ""
    retry_after: float | None = None
    ambiguous: bool = False  # the body went out but no answer came: maybe applied

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else ("ambiguous" if self.ambiguous else "network")

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in (408, 429) or self.status >= 500


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as delay-seconds or as an HTTP-date (RFC 9110 10.2.3); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class UpstreamClient:
    def __init__(self, settings: UpstreamSettings, instance_id: str, clock: Clock) -> None:
        self.base_url = settings.url.rstrip("/")
        self.clock = clock
        self.base_headers = {
            "UNLEASH-APPNAME": settings.app_name,
            "UNLEASH-INSTANCEID": instance_id,
            "User-Agent": f"metrics-proxy/{__version__}",
            "Content-Type": "application/json",
            **settings.headers,
        }
        self.timeout = aiohttp.ClientTimeout(total=settings.request_timeout, sock_connect=settings.request_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, token: str, batch_id: str, body: bytes, path: str = BULK_PATH) -> SendResult:
        assert self._session is not None
        headers = {**self.base_headers, "Authorization": token, "Idempotency-Key": batch_id}
        try:
            async with self._session.post(self.base_url + path, data=body, headers=headers) as response:
                text = (await response.read())[:300].decode(errors="replace")
                return SendResult(
                    response.status,
                    error=f"HTTP {response.status} {text}".strip(),
                    retry_after=parse_retry_after(response.headers.get("Retry-After"), self.clock.now()),
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Never connected: the body did not go out.
            return SendResult(None, error=f"connect failed: {exc!r}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Reset, disconnect or timeout after connecting: the upstream may have applied it.
            return SendResult(None, error=f"no answer: {exc!r}", ambiguous=True)
