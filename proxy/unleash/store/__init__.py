"""The Unleash queries: every SQL statement behind the Unleash read shapes, feature documents, custom metrics and upstream token verdicts."""
