"""Tamper evidence: an RFC 6962 Merkle tree over the event log, signed checkpoints, proofs and verification."""
