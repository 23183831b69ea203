"""Journal shards of ingest workers: a worker's own journal file and the primary's reader of them."""
