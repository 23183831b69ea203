"""Tokens not in the local lists, checked with the upstream's `POST /edge/validate`.

Unleash answers 200 `{"tokens": [...]}` listing only the valid tokens of those sent, with their
type and environment, when called without an Authorization header (with a client token it answers
403). Each verdict, valid or not, is stored durably and re-checked after an interval; while the
upstream cannot answer, a token checked before keeps its last verdict, and an unchecked one raises
UpstreamUnreachable (the caller answers 503 so the SDK retries instead of giving up).

Only a token never checked waits for the upstream; a due re-check runs in the background while the
request goes on with the last verdict, so a slow or dead upstream never delays a known token.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import msgspec

from proxy.clock import Clock
from proxy.storage import StorageUnavailable, Store
from proxy.unleash.store import upstream_tokens
from proxy.unleash.store.upstream_tokens import TokenVerdict, digest
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

# Newer Unleash releases call client tokens "backend".
KIND_ALIASES = {"backend": "client"}
# An SDK request waits on the first check of its token: bound it below the upstream timeout.
MAX_CHECK_SECONDS = 5.0
# After a failed re-check, try again this much later instead of on every request.
RETRY_FAILED_CHECK_SECONDS = 60.0


class UpstreamUnreachable(Exception):
    pass


class ValidationQuestion(msgspec.Struct):
    tokens: list[str]


class ValidatedToken(msgspec.Struct):
    token: str
    type: str
    environment: str | None = None


class ValidationAnswer(msgspec.Struct):
    tokens: list[ValidatedToken] = []


_decode_answer = msgspec.json.Decoder(ValidationAnswer).decode
_encode_question = msgspec.json.Encoder().encode


def validate_url(upstream_url: str) -> str:
    """`http://host:4242/api` -> `http://host:4242/edge/validate`: Unleash mounts /edge beside /api."""
    base = upstream_url.rstrip("/")
    if base.endswith("/api"):
        base = base[: -len("/api")]
    return base + "/edge/validate"


class TokenValidator:
    def __init__(self, client: UpstreamClient, timeout: float, revalidate_after: float, store: Store,
                 clock: Clock) -> None:
        self.client = client
        self.url = validate_url(client.base_url)
        self.timeout = min(timeout, MAX_CHECK_SECONDS)
        self.revalidate_after = revalidate_after
        self.store = store
        self.clock = clock
        self.calls = 0  # validation requests sent, for the scrape
        self.failures = 0
        self._verdicts: dict[str, TokenVerdict] | None = None
        self._in_flight: dict[str, asyncio.Future[TokenVerdict]] = {}

    async def verdict(self, token: str) -> tuple[str | None, str | None]:
        """(kind or None if invalid, environment). Raises UpstreamUnreachable for an unchecked token."""
        if self._verdicts is None:
            try:
                self._verdicts = self.store.on_writer(upstream_tokens.load)
            except StorageUnavailable:
                self._verdicts = {}  # the database did not open: every token is asked upstream
        key = digest(token)
        known = self._verdicts.get(key)
        if known is not None and self.clock.now() - known[2] < self.revalidate_after:
            return known[0], known[1]
        # Concurrent requests with the same token share one upstream call.
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._check(token, key, known))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda _f: self._in_flight.pop(key, None))
        if known is not None:
            return known[0], known[1]  # the re-check runs on in the background
        kind, environment, _checked = await asyncio.shield(pending)
        return kind, environment

    async def settle(self) -> None:
        """Wait for the checks under way (background re-checks included)."""
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    async def _check(self, token: str, key: str, known: TokenVerdict | None) -> TokenVerdict:
        try:
            answer = await self._ask(token)
        except (TimeoutError, aiohttp.ClientError, msgspec.DecodeError, UpstreamUnreachable) as exc:
            self.failures += 1
            if known is not None:
                log.warning("token re-validation failed (%s); keeping the last verdict", exc)
                # Treat it as checked so that the next attempt comes RETRY_FAILED_CHECK_SECONDS later.
                assert self._verdicts is not None
                retry_at = self.clock.now() - self.revalidate_after + RETRY_FAILED_CHECK_SECONDS
                self._verdicts[key] = (known[0], known[1], retry_at)
                return known
            raise UpstreamUnreachable(f"the upstream could not validate the token: {exc}") from None
        verdict: TokenVerdict = (None, None, self.clock.now())
        for entry in answer.tokens:
            if entry.token == token:
                verdict = (KIND_ALIASES.get(entry.type, entry.type), entry.environment, self.clock.now())
        assert self._verdicts is not None
        self._verdicts[key] = verdict
        try:
            self.store.write(upstream_tokens.save, {key: verdict})
        except StorageUnavailable as exc:
            # The verdict still holds in memory; only a restart would ask the upstream again.
            log.error("could not store a token verdict: %s", exc)
        return verdict

    async def _ask(self, token: str) -> ValidationAnswer:
        self.calls += 1
        reply = await self.client.request("POST", self.url, body=_encode_question(ValidationQuestion([token])),
                                          headers={"Content-Type": "application/json"}, timeout=self.timeout)
        if reply.status != 200:
            raise UpstreamUnreachable(f"{self.url} answered {reply.status}")
        return _decode_answer(reply.body)

    async def close(self, _app: object = None) -> None:
        """Also usable as an aiohttp on_cleanup callback."""
        for task in list(self._in_flight.values()):
            task.cancel()
        await self.settle()
