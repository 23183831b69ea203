"""The LaunchDarkly room's HTTP handlers and the pure functions that shape their answers."""
