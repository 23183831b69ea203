"""The feature documents in service, one per environment, backed by SQLite.

A new document is written to the store before it replaces the one in memory, so whatever an SDK
was served is what a restarted proxy serves next, even if the upstream never answers again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from proxy.clock import Clock
from proxy.unleash.features.document import EMPTY_DOCUMENT, FeatureDocument, InvalidFeatures
from proxy.unleash.store.features import FeatureDocuments, StoredFeatures

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FeatureStats:
    # Upstream polls by (environment, outcome): updated, not_modified, failed.
    polls: Counter[tuple[str, str]] = field(default_factory=Counter)


class FeatureCache:
    """Per-environment documents (upstream mode) or one document for every environment.

    `environments` is the list the upstream has tokens for; None means a single shared document
    (from `features_file`, or empty), served whatever the caller's environment.
    """

    def __init__(self, environments: list[str] | None, clock: Clock) -> None:
        self.environments = environments
        self.clock = clock
        self.stats = FeatureStats()
        self._documents: dict[str, FeatureDocument] = {}
        self._shared: FeatureDocument | None = None
        self._store: FeatureDocuments | None = None
        if environments is None:
            self._shared = FeatureDocument.parse(EMPTY_DOCUMENT, confirmed_at=clock.now())

    def attach(self, store: FeatureDocuments) -> None:
        """Persist to `store` from now on and serve what it holds for the configured environments."""
        self._store = store
        for stored in store.load_all():
            if self.environments is None or stored.environment not in self.environments:
                continue
            try:
                document = FeatureDocument.parse(stored.document, stored.upstream_etag, stored.confirmed_at)
            except InvalidFeatures as exc:
                log.error("stored features for %s are unreadable (%s); waiting for the upstream", stored.environment, exc)
                continue
            self._documents[stored.environment] = document
            log.info("serving stored features for %s (%d flags)", stored.environment, len(document.by_name))

    def document_for(self, environment: str) -> FeatureDocument | None:
        if self.environments is None:
            return self._shared
        return self._documents.get(environment)

    def replace(self, environment: str, body: bytes, upstream_etag: str | None = None) -> FeatureDocument:
        """Validate, persist, then serve `body` (raises InvalidFeatures; nothing changes then)."""
        current = self.document_for(environment)
        if current is not None and current.body == body and current.upstream_etag == upstream_etag:
            # An upstream without ETags sends the same bytes every poll: no need to rewrite them.
            self.confirm(environment)
            return current
        now = self.clock.now()
        document = FeatureDocument.parse(body, upstream_etag, now)
        if self.environments is None:
            self._shared = document
            return document
        if self._store is not None:
            self._store.save(StoredFeatures(environment, body, upstream_etag, now))
        self._documents[environment] = document
        return document

    def confirm(self, environment: str) -> None:
        """The source says the document in service is still current."""
        document = self.document_for(environment)
        if document is None:
            return
        document.confirmed_at = self.clock.now()
        if self._store is not None and self.environments is not None:
            self._store.confirm(environment, document.confirmed_at)

    def ready(self) -> bool:
        """Every configured environment has a document to serve."""
        if self.environments is None:
            return True
        return all(env in self._documents for env in self.environments)

    def ages(self) -> dict[str, float]:
        """Seconds since each document in service was last confirmed by its source."""
        now = self.clock.now()
        if self.environments is None:
            assert self._shared is not None
            return {"*": now - self._shared.confirmed_at}
        return {env: now - doc.confirmed_at for env, doc in sorted(self._documents.items())}
