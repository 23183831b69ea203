"""metrics-proxy: a durable feature-flag metrics edge proxy."""

__version__ = "0.1.0"
