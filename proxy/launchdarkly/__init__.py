"""The LaunchDarkly room: its metrics and metric-groups REST API (v2), served from the local store
and, with an upstream configured, written through to LaunchDarkly (docs/launchdarkly.md)."""
