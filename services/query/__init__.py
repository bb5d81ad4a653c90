"""Queries declared once (``registry``) and built into the HTTP API, NATS replies and the CLI."""
