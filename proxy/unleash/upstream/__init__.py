"""Talking to an Unleash upstream: bulk forwarding, token validation, feature polling."""
