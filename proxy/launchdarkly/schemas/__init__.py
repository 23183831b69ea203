"""The msgspec Structs of every LaunchDarkly wire shape the proxy reads or writes: the one source of
truth for validation, for the answers and for /openapi.json."""
