"""The proxy's own metrics: plain counters on the hot paths, rendered at scrape time."""
