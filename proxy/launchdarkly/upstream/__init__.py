"""Talking to LaunchDarkly: writes through, the durable queue of writes taken while it was
unreachable and their replay, and the refresh of the local copy."""
