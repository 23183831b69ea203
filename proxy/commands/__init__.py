"""Command-line subcommands beside `serve`: status, flush, health and ready probes."""
