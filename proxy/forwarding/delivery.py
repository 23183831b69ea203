"""Delivering the durable outbox: each environment's batches, oldest first, until each is settled.

The outcome table, the same for every vendor (the vendor only says how one attempt is sent):
- 2xx: delivered, the batch is deleted;
- 413 and 400 (a vendor may name more: RetryPolicy.rejected): split in halves until the rejected
  items stand alone, which go to dead_letters;
- 401/403/404 (and other 4xx): the environment pauses for `auth_retry_interval`, batches kept;
- 429/408/5xx/network errors: retried with capped full-jitter backoff and no time budget,
  Retry-After being a lower bound.

A batch leaves the outbox only after one of those outcomes is committed, so whatever happens
(crash, SIGTERM, outage) an item is in a batch on disk, delivered, or dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from proxy.clock import Clock
from proxy.forwarding.stats import ForwarderStats
from proxy.storage import StorageUnavailable
from proxy.storage.outbox import Batch, Outbox, OutboxItem
from proxy.upstream.client import SendResult

log = logging.getLogger(__name__)

# One attempt at sending a batch (no retries: those are this module's).
SendOnce = Callable[[Batch], Awaitable[SendResult]]
# Told once a batch is settled for good (delivered or dead-lettered), with the last answer.
Settled = Callable[[Batch, SendResult], Awaitable[None]]
REJECTED = frozenset({400, 413})


def new_batch_id() -> str:
    return uuid.uuid4().hex


def halves(items: list[OutboxItem]) -> list[list[OutboxItem]]:
    middle = len(items) // 2
    return [items[:middle], items[middle:]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_initial: float  # seconds before the first retry's ceiling doubles
    retry_max: float  # cap of the backoff ceiling
    auth_retry_interval: float  # how long a refused environment pauses
    max_in_flight: int  # requests at once per environment
    # Answers that refuse the items for good: split until they stand alone, then dead-lettered.
    rejected: frozenset[int] = REJECTED


@dataclass(frozen=True, slots=True)
class Condition:
    """What an environment's upstream is doing now, for the status report: `state` is None while it
    sends normally, else "backing off", "failing" or "paused <status>"; `since` is when that began."""

    state: str | None
    since: float | None
    paused_until: float | None
    in_flight: int  # batches being sent now
    next_attempt: float | None = None  # while backing off: when the next retry goes


class _Retryable(Exception):
    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error)
        self.result = result


class Delivery:
    def __init__(self, outbox: Outbox, send_once: SendOnce, policy: RetryPolicy, clock: Clock,
                 stats: ForwarderStats, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 settled: Settled | None = None) -> None:
        self.outbox = outbox
        self.settled = settled
        self.send_once = send_once
        self.policy = policy
        self.clock = clock
        self.stats = stats
        # Waits between retries go through `sleep`, so a test can run a 24 h outage on a clock it
        # moves (tests/reliability/test_long_outage.py) instead of waiting for it.
        self.sleep = sleep
        self._paused_until: dict[str, float] = {}
        self._pause_logged: dict[str, int | None] = {}  # env -> status last recorded
        # What the log last said of each environment's upstream: one line per change (backing
        # off, paused, resumed, drained), never one per retry. Absent: sending normally.
        self._condition: dict[str, str] = {}
        self._condition_since: dict[str, float] = {}  # when each environment's condition began
        self._next_attempt: dict[str, float] = {}  # when each backing-off environment retries next
        self._sending: Counter[str] = Counter()  # batches being sent, per environment
        # Ids of the batches being sent. Ids, not seqs: SQLite hands a deleted batch's seq out
        # again, and a guard keyed by seq lifted by one batch would lift another's.
        self._in_flight: set[str] = set()
        self._drains: dict[str, asyncio.Task] = {}

    # --- draining ---------------------------------------------------------------------------

    def drain(self, env: str) -> None:
        """Start sending the environment's batches, unless it is paused or already draining."""
        if self.is_paused(env, self.clock.now()):
            return
        drain = self._drains.get(env)
        if drain is None or drain.done():
            self._drains[env] = asyncio.create_task(self._drain(env), name=f"drain-{env}")

    async def idle(self) -> None:
        """Return once no drain is running."""
        while running := [t for t in self._drains.values() if not t.done()]:
            await asyncio.wait(running)

    async def cancel(self) -> None:
        for task in self._drains.values():
            task.cancel()
        await asyncio.gather(*self._drains.values(), return_exceptions=True)

    def condition(self, env: str) -> Condition:
        """What the status report shows of the environment's upstream (proxy/api/status/)."""
        state = self._condition.get(env)
        if state in ("resumed", None):
            state = None
        return Condition(state, self._condition_since.get(env) if state else None, self._paused_until.get(env),
                         self._sending[env], self._next_attempt.get(env) if state else None)

    def _set_condition(self, env: str, state: str) -> None:
        if self._condition.get(env) != state:
            self._condition_since[env] = self.clock.now()
        self._condition[env] = state

    def is_paused(self, env: str, now: float) -> bool:
        until = self._paused_until.get(env)
        if until is None:
            return False
        if now >= until:
            del self._paused_until[env]
            self.stats.paused_environments.discard(env)
            return False
        return True

    async def _drain(self, env: str) -> None:
        sending: set[asyncio.Task] = set()
        failed = False
        try:
            while True:
                # After an unexpected error (e.g. the disk is full) take no new batches until the
                # next tick, rather than spinning on the same batch.
                if not failed and not self.is_paused(env, self.clock.now()):
                    room = self.policy.max_in_flight - len(sending)
                    try:
                        batches = self.outbox.oldest_batches(env, self._in_flight, room)
                    except StorageUnavailable as exc:  # the sends under way go on
                        failed, batches = True, []
                        log.error("reading the batches of %s failed, retried on the next tick: %s", env, exc)
                    sending.update(self._start(batch) for batch in batches)
                if not sending:
                    if not failed and not self.is_paused(env, self.clock.now()):
                        self._drained(env)
                    return
                done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        failed = True
                        if self._condition.get(env) != "failing":  # once until a batch goes through
                            self._set_condition(env, "failing")
                            log.error("upstream of %r: failing, sending or settling a batch failed; the "
                                      "environment takes no new batches until the next tick: %r",
                                      env, task.exception())
        finally:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)

    def _start(self, batch: Batch) -> asyncio.Task:
        """Send `batch` in a task of its own, marked as being sent for exactly as long as the task
        lasts: the mark goes in a done callback, which runs however the task ends (even when it is
        cancelled before its first step, when no `finally` of the coroutine would)."""
        self._in_flight.add(batch.id)
        self._sending[batch.environment] += 1
        task = asyncio.create_task(self._deliver(batch), name=f"deliver-{batch.id}")
        task.add_done_callback(lambda _task: self._sent(batch))
        return task

    def _sent(self, batch: Batch) -> None:
        self._in_flight.discard(batch.id)
        self._sending[batch.environment] -= 1

    # --- one batch --------------------------------------------------------------------------

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch until it is delivered, dead-lettered or its environment pauses. The
        caller marks it as being sent (and unmarks it)."""
        result = await self._send_with_retries(batch)
        status = result.status or 0
        if 200 <= status < 300:
            now = self.clock.now()
            self.outbox.delivered(batch, now)
            self.stats.batches_delivered += 1
            self.stats.last_success_time = now
            self._unpause(batch.environment)  # the upstream takes its batches (delivered() cleared the record)
            self._resumed(batch.environment)
            if self.settled is not None:
                await self.settled(batch, result)
        elif status in self.policy.rejected:
            await self._reject(batch, result)
        else:  # 401/403/404 or another 4xx: resending the same cannot help soon; keep it
            self._pause(batch.environment, result)

    async def _send_with_retries(self, batch: Batch) -> SendResult:
        ambiguous = False
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            wait=self._backoff,
            stop=stop_never,
            before_sleep=lambda state: self._count_retry(batch.environment, state),
            sleep=self.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = await self.send_once(batch)
                self.stats.requests[result.label] += 1
                if result.ambiguous and not ambiguous:
                    ambiguous = True
                    self.stats.ambiguous_batches += 1
                if result.retryable:
                    self._backing_off(batch.environment, result)
                    self._record_attempt(batch, result)
                    raise _Retryable(result)
        return result

    def _record_attempt(self, batch: Batch, result: SendResult) -> None:
        """Count a failed attempt for the status report. Only bookkeeping: when it cannot be
        written the batch is retried all the same, after its backoff (a batch no longer in the
        outbox, BatchGone, is not)."""
        try:
            self.outbox.record_attempt(batch, result.error[:500])
        except StorageUnavailable as exc:
            log.warning("could not record a failed attempt of a batch of %s (%s); retrying it anyway: %s",
                        batch.environment, result.error[:200], exc)

    def _backoff(self, state: RetryCallState) -> float:
        # Full jitter (uniform in [0, min(cap, initial * 2^n)]) keeps many proxies from retrying in
        # step; the upstream's Retry-After is a floor, even above the cap.
        ceiling = min(self.policy.retry_max, self.policy.retry_initial * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, ceiling)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.result.retry_after is not None:
            delay = max(delay, exc.result.retry_after)
        return delay

    def _count_retry(self, env: str, state: RetryCallState) -> None:
        self.stats.retries += 1
        if state.next_action is not None:  # when the retry goes, for the status report
            self._next_attempt[env] = self.clock.now() + state.next_action.sleep

    async def _reject(self, batch: Batch, result: SendResult) -> None:
        """400/413: split until the rejected items stand alone; those are dead-lettered."""
        if len(batch.items) == 1:
            moved = self.outbox.dead_letter(batch, result.status, result.error[:500], self.clock.now())
            self.stats.dead_lettered_rows += moved
            log.error("upstream refused an item of %s for good (%s); moved to dead_letters",
                      batch.environment, result.error[:200])
            if self.settled is not None:
                await self.settled(batch, result)
            return
        children = self.outbox.split(batch, halves(batch.items), new_batch_id)
        self.stats.batches_split += 1
        # Marked before any await (the drain must not take them) and unmarked however this ends:
        # a half left unsent because its sibling raised goes out with the next tick's drain.
        ids = {c.id for c in children}
        self._in_flight |= ids
        try:
            for child in children:
                if self.is_paused(child.environment, self.clock.now()):
                    return  # a half refused (401...): the rest waits for the pause like every batch
                await self._deliver(child)
        finally:
            self._in_flight -= ids

    def _pause(self, env: str, result: SendResult) -> None:
        # Paused first: writing the reason down for the status report may fail (a full or locked
        # store), and must not leave the environment sending to an upstream that refuses it.
        self._paused_until[env] = self.clock.now() + self.policy.auth_retry_interval
        self.stats.paused_environments.add(env)
        # Logged and recorded once per refusal reason, not on every slow retry; a 2xx resets it.
        if self._pause_logged.get(env) == result.status:
            return
        if self._condition.get(env) != f"paused {result.status}":
            self._set_condition(env, f"paused {result.status}")
            log.error(
                "upstream of %r: paused, it refused the environment (%s); its batches are kept and retried "
                "every %g s", env, result.error[:200], self.policy.auth_retry_interval,
            )
        try:
            self.outbox.set_pause(env, result.error[:200])
        except StorageUnavailable as exc:
            log.warning("could not record the pause of %r (written at its next refusal): %s", env, exc)
        else:
            self._pause_logged[env] = result.status

    # --- what the log says of an environment's upstream: one line per change ----------------

    def _backing_off(self, env: str, result: SendResult) -> None:
        if self._condition.get(env) != "backing off":
            # Backing off after failing is the same outage: it keeps the time it began.
            if self._condition.get(env) != "failing":
                self._set_condition(env, "backing off")
            self._condition[env] = "backing off"
            log.warning("upstream of %r: backing off after %s; retried with backoff up to %g s, nothing is "
                        "dropped", env, result.error[:200], self.policy.retry_max)

    def _resumed(self, env: str) -> None:
        if self._condition.get(env, "resumed") != "resumed":
            self._set_condition(env, "resumed")
            log.info("upstream of %r: resumed, it takes batches again; %d batches wait", env,
                     self.outbox.pending_batch_count(env))

    def _drained(self, env: str) -> None:
        """The drain found nothing left to send: after a resume, that is the backlog gone."""
        if self._condition.get(env) == "resumed" and self.outbox.pending_batch_count(env) == 0:
            del self._condition[env]
            self._condition_since.pop(env, None)
            log.info("upstream of %r: drained, every batch cut so far is delivered", env)

    def _unpause(self, env: str) -> None:
        """A 2xx: the upstream takes the environment's batches again, whatever a refusal answered
        meanwhile said."""
        self._pause_logged.pop(env, None)
        if self._paused_until.pop(env, None) is not None:
            self.stats.paused_environments.discard(env)
