"""The client features document (`GET /api/client/features`), as far as the proxy relies on it.

The proxy serves the upstream's (or `features_file`'s) document as generic JSON, so fields it does
not know reach the SDKs unchanged; these Structs check the parts it reads (every flag has a name)
and describe the answers in /openapi.json.
"""

from __future__ import annotations

from typing import Any

import msgspec


class FeatureFlag(msgspec.Struct, kw_only=True, gc=False):
    """One flag definition; every other field (strategies, variants, ...) is passed on as it came."""

    name: str
    project: str = "default"
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class ClientFeatures(msgspec.Struct, kw_only=True, gc=False):
    version: int = 2
    features: list[FeatureFlag]
    segments: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET
    query: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    meta: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
