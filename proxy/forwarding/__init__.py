"""The delivery mechanism of the durable outbox: retries, backoff, splitting, pauses, counters."""
