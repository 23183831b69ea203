"""Serving flag definitions to SDKs: the features document cache and where its documents come from."""
