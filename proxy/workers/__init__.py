"""Ingest workers (`workers = N`): N - 1 extra processes on the same port that commit ingest to
their own journal files (proxy/storage/shards/reader.py) and pass every other request to the primary."""
