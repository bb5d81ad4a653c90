"""Telling stakeholders: the outbox, what to send (decision), the webhook sender, project digests."""
