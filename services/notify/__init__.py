"""Telling stakeholders: outbox, what to send (decision), webhook sender, project digests."""
