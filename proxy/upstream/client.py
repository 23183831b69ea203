"""The one HTTP client to an upstream: its session, base URL, timeouts and identity headers.

Every part that talks to an upstream (forwarding, feature polling, token validation) goes through
one `UpstreamClient`, so the upstream sees one application name and one instance id from this
proxy, over one connection pool. The vendor decides the identity headers; this module decides how
an answer is classified for the retry policy (proxy/forwarding/delivery.py). No retries here.
"""

from __future__ import annotations

import email.utils
import gzip
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

from proxy.clock import Clock

ERROR_TEXT_BYTES = 300  # of an upstream's error body kept with the outcome


@dataclass(slots=True)
class SendResult:
    status: int | None  # None: no HTTP answer
    error: str = ""
    retry_after: float | None = None
    ambiguous: bool = False  # the body went out but no answer came: maybe applied
    reply: Reply | None = None  # the answer itself, for a sender that keeps what it says (send())

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else ("ambiguous" if self.ambiguous else "network")

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in (408, 429) or self.status >= 500


@dataclass(slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


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
    def __init__(self, base_url: str, timeout: float, clock: Clock, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
        # Sent with every request; the vendor sets its identity here before the first one (open()).
        self.headers: dict[str, str] = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    async def open(self, identity: dict[str, str] | None = None) -> None:
        """Start the session; `identity` headers join the default ones (those given at creation win,
        so an operator's configured headers override the vendor's)."""
        if identity:
            self.headers = {**identity, **self.headers}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str) -> str:
        """`path` under the base URL; an absolute URL is kept as it is."""
        return path if "://" in path else self.base_url + path

    async def request(self, method: str, path: str, token: str | None = None, *, body: bytes | None = None,
                      headers: dict[str, str] | None = None, timeout: float | None = None) -> Reply:
        """One request; raises aiohttp.ClientError or TimeoutError when no answer came."""
        if self._session is None:
            raise RuntimeError("the upstream client is not open")
        sent = {**self.headers, **(headers or {})}
        if token is not None:
            sent["Authorization"] = token
        options = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)}
        async with self._session.request(method, self.url(path), data=body, headers=sent, **options) as response:
            return Reply(response.status, response.headers, await response.read())

    async def post(self, path: str, token: str, body: bytes, *, idempotency_key: str | None = None,
                   compress: bool = False) -> SendResult:
        """POST a JSON body and classify the outcome: never raises for network trouble.

        With `compress`, the body goes gzip-compressed (`Content-Encoding: gzip`); the upstream's
        size limits apply to what it decompresses, so callers bound the uncompressed body."""
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if compress:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        return await self.send("POST", path, token, body, headers)

    async def send(self, method: str, path: str, token: str | None, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> SendResult:
        """One request of any method, its outcome classified as post()'s (the answer kept in
        `reply`): never raises for network trouble."""
        try:
            reply = await self.request(method, path, token, body=body, headers=headers)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Never connected: the body did not go out.
            return SendResult(None, error=f"connect failed: {exc!r}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Reset, disconnect or timeout after connecting: the upstream may have applied it.
            return SendResult(None, error=f"no answer: {exc!r}", ambiguous=True)
        text = reply.body[:ERROR_TEXT_BYTES].decode(errors="replace")
        return SendResult(
            reply.status,
            error=f"HTTP {reply.status} {text}".strip(),
            retry_after=parse_retry_after(reply.headers.get("Retry-After"), self.clock.now()),
            reply=reply,
        )
