"""What is kept with a stored event payload (the `meta` of storage's VendorPayload), and how
payloads are merged into the batches sent upstream."""

from __future__ import annotations

import msgspec

VENDOR = "launchdarkly.events"  # the outbox vendor and inbound_payloads vendor of SDK events


class PayloadMeta(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    path: str  # the upstream path the payload goes to (Relay keeps the platform's path)
    environment: str
    kind: str  # credential kind: server, mobile, browser, import
    project: str
    received: float  # epoch seconds the proxy accepted it
    diagnostic: bool = False  # forwarded whole, never merged
    schema: str | None = None  # X-LaunchDarkly-Event-Schema
    tags: str | None = None  # X-LaunchDarkly-Tags
    user_agent: str | None = None
    payload_id: str | None = None  # the SDK's X-LaunchDarkly-Payload-ID
    key: str | None = None  # auth = "open": the key the events go upstream with


class BatchSpec(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """What every event of one outbox batch shares: path and headers. Kept as the outbox item's
    kind, so a split's halves keep it."""

    path: str
    diagnostic: bool = False
    schema: str | None = None
    tags: str | None = None
    user_agent: str | None = None
    key: str | None = None

    @classmethod
    def of(cls, meta: PayloadMeta) -> BatchSpec:
        return cls(path=meta.path, diagnostic=meta.diagnostic, schema=meta.schema, tags=meta.tags,
                   user_agent=meta.user_agent, key=meta.key)


encode = msgspec.json.Encoder().encode
decode_meta = msgspec.json.Decoder(PayloadMeta).decode
decode_spec = msgspec.json.Decoder(BatchSpec).decode
