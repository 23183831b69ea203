"""What a vendor room needs to build its status section: one `Queue` from the outbox's stored
state and the delivery's live condition, the last hour's minutes, redacted names."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from proxy.api.status.schemas import MinuteCount, Queue, UsageEntry
from proxy.forwarding.delivery import Condition
from proxy.storage.outbox_status import OutboxQueue

MINUTES = 60
NO_CONDITION = Condition(None, None, None, 0)


def last_hour(now: float) -> list[int]:
    """The starts of the last MINUTES minutes, the current one last."""
    current = int(now // 60 * 60)
    return [current - 60 * back for back in range(MINUTES - 1, -1, -1)]


def per_minute(minutes: list[int], counts: dict[int, int]) -> list[MinuteCount]:
    return [MinuteCount(minute=m, evaluations=counts.get(m, 0)) for m in minutes]


def usage(rows: list[tuple]) -> list[UsageEntry]:
    return [UsageEntry(name=name, evaluations=n) for name, n in rows]


def redact_url(url: str | None) -> str | None:
    """The URL without user and password (a secret may ride in them)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def redact_secret(secret: str) -> str:
    """A credential named for an operator without showing it: its last four characters."""
    return "****" + secret[-4:] if len(secret) > 8 else "****"


def queue(name: str, kind: str, now: float, stored: OutboxQueue | None, *, upstream: bool,
          condition: Condition = NO_CONDITION, pending_rows: int = 0, pending_count: int = 0,
          pending_since: float | None = None, live: bool = True) -> Queue:
    """One queue's entry. `stored` is what the outbox tables hold of it; `condition` what its
    delivery does now (`live` False: read from the file, no process to ask, so a queue whose
    oldest payload has failed attempts counts as failing)."""
    stored = stored or OutboxQueue()
    oldest = min((t for t in (stored.oldest, pending_since) if t is not None), default=None)
    live_state = condition.state or ""
    if not upstream:
        state, since = "local", None
    elif stored.paused is not None or live_state.startswith("paused"):
        state, since = "paused", condition.since if live_state.startswith("paused") else None
    elif live_state in ("failing", "backing off") or (not live and stored.attempts > 0):
        state, since = "failing", condition.since
    else:
        state, since = "healthy", None
    return Queue(
        name=name, kind=kind, state=state, stateSince=since,  # type: ignore[arg-type]
        lastError=stored.last_error, pendingRows=pending_rows, pendingCount=pending_count + stored.count,
        pendingPayloads=stored.payloads, oldestPendingAge=None if oldest is None else max(0.0, now - oldest),
        lastSuccess=stored.last_success, inFlight=condition.in_flight, attempts=stored.attempts,
        nextAttempt={"paused": condition.paused_until, "failing": condition.next_attempt}.get(state),
        pausedReason=stored.paused,
        deadLetters=stored.dead_letters, newestDeadLetterReason=stored.newest_dead_letter_reason,
    )
