"""A client features document (`{version, features, segments?, query?, meta?}`) and the filtered
views of it the proxy serves.

The document is kept as the generic JSON the upstream sent, so fields this proxy does not know
about reach the SDKs unchanged. Each distinct filter is rendered and hashed once per document;
a polling SDK then costs a dict lookup and a string compare.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from proxy.unleash.schemas.features import ClientFeatures

# Distinct filters remembered per document; SDK fleets use a handful, so this only bounds abuse.
MAX_RENDERED_VIEWS = 256

# Keys of `meta` that describe the upstream's own answer (its ETag), not the proxy's.
_UPSTREAM_ONLY_META = ("etag", "queryHash")

_encoder = msgspec.json.Encoder()
_check_features = msgspec.json.Decoder(ClientFeatures).decode


class InvalidFeatures(ValueError):
    """The bytes are not a client features document; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class FeatureFilter:
    """What one request may see: the token's projects (None = all) and the SDK's query filters."""

    token_projects: frozenset[str] | None = None
    projects: tuple[str, ...] = ()
    name_prefix: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def admits(self, feature: dict[str, Any]) -> bool:
        project = feature.get("project", "default")
        if self.token_projects is not None and project not in self.token_projects:
            return False
        if self.projects and project not in self.projects:
            return False
        if self.name_prefix and not feature["name"].startswith(self.name_prefix):
            return False
        if self.tags and not any(_tag_pair(tag) in self.tags for tag in feature.get("tags") or ()):
            return False
        return True

    def query(self, environment: str) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if self.projects:
            query["project"] = list(self.projects)
        if self.name_prefix:
            query["namePrefix"] = self.name_prefix
        if self.tags:
            query["tag"] = [f"{kind}:{value}" for kind, value in self.tags]
        query["environment"] = environment
        return query


def _tag_pair(tag: Any) -> tuple[str, str] | None:
    if isinstance(tag, dict):
        return (str(tag.get("type")), str(tag.get("value")))
    return None


# Smaller answers go out as they are: gzip would barely shrink them.
GZIP_MIN_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    etag: str
    # Compressed once per view, not per request: documents run to hundreds of kB and SDKs poll.
    gzipped: bytes | None = None

    @classmethod
    def of(cls, body: bytes) -> Rendered:
        gzipped = gzip.compress(body, compresslevel=6, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
        return cls(body, entity_tag(body), gzipped)


def entity_tag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


@dataclass(slots=True)
class FeatureDocument:
    raw: dict[str, Any]
    body: bytes
    upstream_etag: str | None
    confirmed_at: float
    by_name: dict[str, dict[str, Any]]
    _views: dict[tuple[FeatureFilter, str], Rendered] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: bytes, upstream_etag: str | None = None, confirmed_at: float = 0.0) -> FeatureDocument:
        raw = parse_features(body)
        by_name = {feature["name"]: feature for feature in raw["features"]}
        return cls(raw, body, upstream_etag, confirmed_at, by_name)

    def render(self, selection: FeatureFilter, environment: str) -> Rendered:
        key = (selection, environment)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= MAX_RENDERED_VIEWS:
                self._views.clear()
            view = self._views[key] = self._render(selection, environment)
        return view

    def _render(self, selection: FeatureFilter, environment: str) -> Rendered:
        served = dict(self.raw)
        served["features"] = [f for f in self.raw["features"] if selection.admits(f)]
        served["query"] = {**_upstream_query(self.raw), **selection.query(environment)}
        meta = self.raw.get("meta")
        if isinstance(meta, dict):
            served["meta"] = {k: v for k, v in meta.items() if k not in _UPSTREAM_ONLY_META}
        return Rendered.of(_encoder.encode(served))

    def feature(self, name: str, selection: FeatureFilter) -> Rendered | None:
        feature = self.by_name.get(name)
        if feature is None or not selection.admits(feature):
            return None
        return Rendered.of(_encoder.encode(feature))


def _upstream_query(raw: dict[str, Any]) -> dict[str, Any]:
    """The upstream's query minus its filters (they were the upstream token's, not the caller's)."""
    query = raw.get("query")
    if not isinstance(query, dict):
        return {}
    return {k: v for k, v in query.items() if k not in ("project", "namePrefix", "tag", "environment")}


def parse_features(body: bytes) -> dict[str, Any]:
    """The document as generic JSON, once it is checked against ClientFeatures."""
    try:
        _check_features(body)
        return msgspec.json.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidFeatures(f"not a client features document: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidFeatures(f"not valid JSON: {exc}") from None


EMPTY_DOCUMENT = b'{"version":2,"features":[],"segments":[]}'
